"""Opening the files a run reads (configs, grids, IC files, training trajectories): regular files only,
of a bounded size, refused in one line before anything is read.

A path naming a FIFO would block the open until a writer comes, and a device (a link to
``/dev/zero``) never ends: both are refused from their ``fstat``, taken on a descriptor opened
without blocking. A file over its kind's size cap is refused before it is parsed, so a 50 MB
list in a TOML file costs a ``stat``, not minutes of parsing.

IC files (``.npy`` or ``.txt``: one row per body, ``mass, x.., v..``, or a stack of such blocks,
(B, N, 1 + 2D), in a ``.npy``) are read here too, so that the config learns their shape before a
run starts (:func:`ic_shape`): a ``.npy`` header is checked against the file's size and dtype
before its array is allocated.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError

MiB = 2**20
CONFIG_MAX_BYTES = 1 * MiB  # a config or grid is a few kB
IC_MAX_BYTES = 256 * MiB  # 4.8 million bodies in 3-D as float64: far beyond what the pair forces allow
REAL_KINDS = "fiu"  # numpy dtype kinds an IC file's numbers may have


def _size(n: int) -> str:
    return f"{n / MiB:.3g} MiB" if n >= MiB else f"{n} bytes"


@contextmanager
def open_input(path: str | Path, what: str, named_by: str, max_bytes: int | None = None) -> Iterator:
    """``path`` opened for binary reading, once it is known to be a regular file of at most
    ``max_bytes`` (None: any size). ``what`` the file is ("config file") and ``named_by`` (the
    flag or key that named it) go into the InputError of every refusal."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open would otherwise wait for a writer
    except FileNotFoundError:
        raise InputError(f"{what} '{path}' does not exist; check {named_by}") from None
    except OSError as err:
        raise InputError(f"cannot read {what} '{path}': {err.strerror}; check {named_by}") from None
    try:
        info = os.fstat(fd)
        mode, size = info.st_mode, info.st_size
        if stat.S_ISDIR(mode):
            raise InputError(f"{what} '{path}' is a directory; give a file to {named_by}")
        if not stat.S_ISREG(mode):
            raise InputError(f"{what} '{path}' is not a regular file (a pipe, device or socket), which could "
                             f"block or never end; give a file to {named_by}")
        if max_bytes is not None and size > max_bytes:
            raise InputError(f"{what} '{path}' is {_size(size)}, more than the {_size(max_bytes)} a {what} may be; "
                             f"check {named_by}")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_ic_array(path: str | Path) -> np.ndarray:
    """The numbers of an IC file as float64, shape (B, N, 1 + 2D) (a table of one system gets
    B = 1), checked as :func:`ic_shape` says before anything is allocated. Errors never quote the
    file's content: it may be any file the process can read, and the message may be shown to
    whoever named it."""
    return _read_ic(Path(path), header_only=False)


def ic_shape(path: str | Path) -> tuple[int, int, int]:
    """(systems B, bodies N, dimensions D) of an IC file: from a ``.npy`` header (checked against
    the file's size and dtype: real numbers only) or from reading a ``.txt`` table, in either
    case one of at most IC_MAX_BYTES that is a regular file."""
    systems, bodies, columns = _read_ic(Path(path), header_only=True)
    return systems, bodies, (columns - 1) // 2


def _read_ic(path: Path, header_only: bool):
    if path.suffix not in (".npy", ".txt"):
        raise InputError(f"IC file '{path}' must end in .npy or .txt")
    with open_input(path, "IC file", "'ic_path'", IC_MAX_BYTES) as fh:
        if path.suffix == ".npy":
            shape = _npy_header(fh, path)
            table = None if header_only else np.asarray(np.load(fh, allow_pickle=False), dtype=np.float64)
        else:
            table = _text_table(fh, path)
            shape = table.shape
    shape = _checked_shape(shape, path)
    return shape if header_only else table.reshape(shape)


def _checked_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """(B, N, 1 + 2D) for D in (2, 3), from a table's shape (N, 1 + 2D) or (B, N, 1 + 2D)."""
    if 0 in shape:
        raise InputError(f"IC file '{path}' holds no bodies; write one row per body: mass, x.., v..")
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] < 2 or (shape[2] - 1) % 2 or shape[2] < 5:
        raise InputError(f"IC file '{path}' has shape {shape}; expected one row per body (at least 2 bodies)"
                         " with columns mass, x.., v.. (5 columns in 2D, 7 in 3D)")
    if shape[2] not in (5, 7):
        raise InputError(f"IC file '{path}' has {shape[2]} columns: {(shape[2] - 1) // 2}-D; only 2-D and 3-D are "
                         "supported")
    return shape


def _not_an_array(path: Path) -> InputError:
    return InputError(f"IC file '{path}' is not a NumPy array of numbers (np.save); write one row per body: "
                      "mass, x.., v..")


def _npy_header(fh, path: Path) -> tuple[int, ...]:
    """The shape the ``.npy`` header claims, once its dtype is a real number type and the file
    holds exactly the bytes that shape needs (a header claiming 10^15 rows is refused here,
    before anything is allocated); ``fh`` is left at the start."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(fh)
        shape, _fortran, dtype = readers[version](fh)
    except (ValueError, KeyError, EOFError, OSError):
        raise _not_an_array(path) from None
    if dtype.kind == "c":
        raise InputError(f"IC file '{path}' holds complex numbers; masses, positions and velocities are real: save "
                         "the real parts (np.real)")
    if dtype.kind not in REAL_KINDS or dtype.hasobject:
        raise _not_an_array(path)
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = os.fstat(fh.fileno()).st_size - fh.tell()
    if claimed != held:
        raise InputError(f"IC file '{path}' claims shape {shape} ({_size(claimed)}) but holds {_size(held)} of "
                         "numbers: it is cut short or not written by np.save")
    fh.seek(0)
    return tuple(int(n) for n in shape)


def _text_table(fh, path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about an empty file before returning nothing
            return np.loadtxt(fh, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError):  # complex numbers, words, ragged rows
        raise InputError(f"IC file '{path}' is not a table of real numbers; write one row per body: "
                         "mass, x.., v..") from None
