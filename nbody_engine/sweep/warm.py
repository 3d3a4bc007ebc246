"""Warm workers: each worker process keeps one zygote (:mod:`nbody_engine.sweep.zygote`), a
parent that has imported torch and the runner, and each run is a child forked from it. The
zygote starts with the worker (:class:`WarmRunsPlugin`, registered by the sweep) or at the
worker's first run, and ends with the worker.

Also here: the GPUs of a worker. A job with several GPUs (``CUDA_VISIBLE_DEVICES=0,1``) gives
each run one of them, the one fewest of its runs are using, so runs that share a job do not
all land on the first GPU. And how a worker process of the sweep's own local cluster lets
Ctrl-C pass and ends (:func:`prepare_local_worker`)."""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .zygote import READY

ZYGOTE_START_S = 300.0  # how long a zygote may take to import torch and the runner (a busy shared filesystem)
FORK_S = 60.0  # how long a zygote may take to answer a request with its child's pid


class RunnerLost(RuntimeError):
    """The zygote ended while a run of it was going on."""


def runner_env() -> dict:
    """The runners' environment: the worker's, with the package importable even from an
    uninstalled checkout."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


class WarmRun:
    """One run in a child of the zygote, with ``Popen``'s ``pid`` and ``wait(timeout)``."""

    def __init__(self, path: str, request: dict) -> None:
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.connect(path)
        self.conn.sendall(json.dumps(request).encode() + b"\n")
        self.buffer = b""
        try:
            self.pid = int(self._message(FORK_S)["pid"])
        except subprocess.TimeoutExpired:
            self.conn.close()
            raise RunnerLost(f"the worker's warm parent process (zygote) did not start the run within "
                             f"{FORK_S:.0f} s") from None
        self.returncode: int | None = None

    def _message(self, timeout: float | None) -> dict:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.conn], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("nbody-runner", timeout)
            data = self.conn.recv(4096)
            if not data:
                raise RunnerLost("the worker's warm parent process (zygote) ended during the run")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def wait(self, timeout: float | None = None) -> int:
        """The run's exit status (negative: killed by that signal); raises TimeoutExpired."""
        if self.returncode is None:
            self.returncode = int(self._message(timeout)["exit"])
            self.conn.close()
        return self.returncode


class Zygote:
    """This worker process's zygote, started on first use and restarted if it died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.starting: subprocess.Popen | None = None  # the zygote while it imports torch
        self.path = ""

    def ensure(self) -> str:
        """The socket path of a running zygote (starts one: seconds)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            return self.path

    def _start(self) -> None:
        """Start the zygote and wait until it has imported everything (call with the lock held)."""
        self.path = os.path.join(tempfile.mkdtemp(prefix="nbody-zygote-"), "socket")
        # its stdin is a pipe from this process: end of file tells it the worker died
        command = f"from nbody_engine.sweep.zygote import main; main({self.path!r})"
        self.proc = self.starting = subprocess.Popen([sys.executable, "-c", command],
                                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=runner_env(),
                                                     start_new_session=True, text=True)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], ZYGOTE_START_S)
            line = self.proc.stdout.readline() if ready else ""
        finally:
            self.starting = None
        if line.strip() != READY:
            self._end()
            raise OSError(f"the warm runner process did not start (it said {line.strip()!r}; see the worker's log)")

    def busy(self) -> bool:
        """Whether the zygote is being started (seconds) or stopped now."""
        return self.lock.locked()

    def run(self, request: dict) -> WarmRun:
        return WarmRun(self.ensure(), request)

    def stop(self) -> None:
        """End the zygote and its runs (the worker is closing). A zygote still importing torch has
        no runs yet: it is killed rather than waited for (seconds)."""
        starting = self.starting
        if starting is not None:
            starting.kill()
        with self.lock:
            self._end()

    def _end(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the zygote ends its children and itself
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)  # left where the zygote was killed
        self.proc = None


ZYGOTE = Zygote()  # one per worker process


class GpuPool:
    """The GPUs this worker may use (its ``CUDA_VISIBLE_DEVICES``), handed out one per run,
    each to the run that finds it least used."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_use: dict[str, int] = {}

    def _devices(self) -> list[str]:
        return [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]

    def acquire(self) -> str | None:
        """A device id for a run, or None where the worker has no GPU list."""
        devices = self._devices()
        if not devices:
            return None
        with self.lock:
            device = min(devices, key=lambda d: (self.in_use.get(d, 0), devices.index(d)))
            self.in_use[device] = self.in_use.get(device, 0) + 1
        return device

    def release(self, device: str | None) -> None:
        if device is not None:
            with self.lock:
                self.in_use[device] -= 1


GPUS = GpuPool()


def prepare_local_worker() -> None:
    """In a local worker process: let Ctrl-C in the terminal pass (the sweep cancels the runs and
    closes the cluster itself; without this every worker prints a traceback; a handler, as
    SIG_IGN would pass to the runners), and once the worker has closed (its runs recorded, its
    zygote ended), end the process without the second or more of finalizing torch and Dask that
    the cluster's close would wait for."""
    try:
        signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    except ValueError:  # not the worker's main thread: leave the default
        pass
    atexit.register(_end_now)  # registered last, so it runs first


def _end_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
