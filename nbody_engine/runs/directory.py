"""The run directory ``data/<save_name>/`` and atomic file writing.

Layout: ``config.toml`` (the resolved config, re-runnable as is), ``metrics.jsonl`` (one line
per training epoch), ``progress.jsonl`` (the last run's events, :mod:`nbody_engine.runs.progress_log`),
``model/model_epoch_XXXX.pt``, ``sim/<label>/summary.json`` and ``trajectory.npz``, and the
researcher's ``notes.json`` (:func:`write_notes`; no run writes it). Every file
is written to a temporary name and renamed into place (the two logs grow by whole lines, and
``model/train_trajectory_<id>.bin`` by rows that a checkpoint then covers), so a reader never
sees half a file; files get the modes the umask gives, as ``open`` would.

A run holds its directory's lock (:class:`DirectoryLock`) while it writes there, so two runs
with the same ``save_name`` cannot interleave their checkpoints and metrics;
:func:`lock_holder` tells a reader whether a run is still going there.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..config.errors import InputError
from ..config.loading import check_save_name

DATA_DIR = Path("data")
NOTES_FILE = "notes.json"  # a run's notes and tags, {"notes": str, "tags": [str]}: the researcher's, not the run's
TEMPORARY = ".*.tmp"  # the names atomic_path gives its temporary files


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file is created with mode 0666 less the umask (``mkstemp`` would make it
    0600, and the rename would keep that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:  # a write into an open file (a full disk) names no file: name the target
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def write_notes(root: str | Path, notes: str, tags: list[str]) -> None:
    """Write a run folder's ``notes.json`` atomically (a reader sees the old notes or the new,
    never half). Raises InputError for a folder that holds no run or tags that are not short
    one-line texts without commas (the runs table shows tags joined by commas)."""
    root = Path(root)
    if not (root / "config.toml").is_file():
        raise InputError(f"'{root}' holds no run (no config.toml): notes go into a run's folder")
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip() or tag != tag.strip() or "," in tag or "\n" in tag:
            raise InputError(f"tag {tag!r} of '{root.name}': a tag is a non-empty text without commas, line breaks "
                             "or spaces at its ends")
    write_json(root / NOTES_FILE, {"notes": str(notes), "tags": list(dict.fromkeys(tags))})


class RunDirectory:
    """Paths of one run: ``data/<save_name>`` under ``data_dir``."""

    def __init__(self, save_name: str, data_dir: str | Path | None = None) -> None:
        check_save_name(save_name)
        self.save_name = save_name
        self.root = Path(data_dir if data_dir is not None else DATA_DIR) / save_name

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def progress_path(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.model_dir / f"model_epoch_{epoch:04d}.pt"

    def sim_dir(self, label: str) -> Path:
        return self.root / "sim" / label

    def movie_path(self, movie_dir: str | None, label: str) -> Path:
        """``<movie_dir>/nbody_movie_<save_name>_<label>.mp4``; movie_dir defaults to data/movie."""
        directory = Path(movie_dir) if movie_dir else self.root.parent / "movie"
        return directory / f"nbody_movie_{self.save_name}_{label}.mp4"

    def lock(self) -> DirectoryLock:
        """The lock a run holds while it writes this directory (``with run.lock(): ...``)."""
        return RunLock(self.root)

    def checkpoints(self) -> list[Path]:
        """Checkpoints present, oldest epoch first."""
        return sorted(self.model_dir.glob("model_epoch_*.pt"))

    def holds_training(self) -> bool:
        """Whether a training wrote here (epochs or checkpoints, finished or stopped)."""
        return (self.metrics_path.is_file() and self.metrics_path.stat().st_size > 0) or bool(self.checkpoints())

    def clear(self, part: Path | None = None) -> None:
        """Delete ``part`` of the run (a path under its root), or everything in it but the lock
        the caller holds (``--overwrite``)."""
        for path in [part] if part is not None else [p for p in self.root.iterdir() if p.name != DirectoryLock.FILE]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


class DirectoryLock:
    """An advisory lock on a run directory, held while a run writes there.

    ``<directory>/.lock`` is locked with ``flock`` (the kernel drops the lock when its process
    dies, however it dies) and holds the owner's pid, which a refused run names. Re-entrant
    within one thread (a ``both`` run locks once per phase inside its own lock); another thread
    of the same process is refused like another process. Leaving, the lock file goes, and so do
    the directories the lock created if nothing else was written in them: a run refused for bad
    input leaves nothing behind."""

    FILE = ".lock"
    _held: dict[Path, tuple[int, int, DirectoryLock]] = {}  # path -> (thread id, depth, owner)
    PROBE_RETRIES = 4  # 0.2 s: what a held lock is given before a run is refused
    _guard = threading.Lock()

    def __init__(self, directory: str | Path, what: str = "run") -> None:
        self.shown = Path(directory)
        self.directory = self.shown.absolute()
        self.what = what
        self.path = self.directory / self.FILE
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> DirectoryLock:
        with self._guard:
            held = self._held.get(self.path)
            if held is not None:
                thread, depth, owner = held
                if thread != threading.get_ident():
                    raise InputError(self._in_use(os.getpid(), "another job of this process"))
                self._held[self.path] = (thread, depth + 1, owner)
                return self
            self._acquire()
            self._held[self.path] = (threading.get_ident(), 1, self)
        return self

    def __exit__(self, *exc) -> None:
        with self._guard:
            thread, depth, owner = self._held[self.path]
            if depth > 1:
                self._held[self.path] = (thread, depth - 1, owner)
                return
            del self._held[self.path]
            owner._release()

    def _acquire(self) -> None:
        self._created = [d for d in (self.directory, *self.directory.parents) if not d.exists()][::-1]
        in_the_way = next((d for d in (*self.directory.parents, self.directory) if d.exists() and not d.is_dir()),
                          None)
        if in_the_way is not None:
            raise InputError(f"'{in_the_way}' is a file where the {self.what} needs a folder; move it away, or "
                             "choose another save_name or working directory")
        try:
            self._lock()
        except BaseException:  # no permission, a read-only disk: leave no folder behind
            self._remove_created()
            raise

    def _lock(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in itertools.count():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if attempt < self.PROBE_RETRIES:  # a reader's lock_holder probe holds it for an instant
                    time.sleep(0.05)
                    continue
                raise InputError(self._in_use(pid, "another process")) from None
            if _same_file(fd, self.path):  # not unlinked by a holder leaving meanwhile
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _release(self) -> None:
        if self._fd is None:
            return
        os.unlink(self.path)  # while still holding the lock: a waiter then sees a stale inode
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self._created):
            try:
                directory.rmdir()
            except OSError:
                break  # something was written there: it stays
        self._created = []

    def _in_use(self, pid: int | None, holder: str) -> str:
        who = f"pid {pid}" if pid else holder
        return (f"'{self.shown}' is in use by another {self.what} ({who}); wait for it to end (then "
                f"--resume continues a training), or choose another save_name")


class RunLock(DirectoryLock):
    """The lock of a run directory. Taking it also removes the temporary files that a run killed
    while writing left there (``.model_epoch_0009.pt.<hex>.tmp``, :func:`atomic_path`): the
    holder is the folder's only writer, so no other run is writing them."""

    def _acquire(self) -> None:
        super()._acquire()
        for stale in self.directory.rglob(TEMPORARY):
            stale.unlink(missing_ok=True)


def lock_holder(directory: str | Path) -> int | None:
    """The pid of the process holding ``directory``'s :class:`DirectoryLock` (as it wrote it),
    -1 while its pid is not written yet, or None when nobody holds it. Any process that sees
    the directory can ask."""
    try:
        fd = os.open(Path(directory) / DirectoryLock.FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
