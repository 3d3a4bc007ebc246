"""A warm parent for a worker's runs: the zygote (``main(SOCKET)``, started by :mod:`.warm`) imports
torch and the runner once, then forks one child per run, so a run starts in milliseconds instead of
paying the ~5 s of Python and torch start-up.

Each child is an ordinary headless run (the runner run as a program, as ``python -m
nbody_engine.runner`` runs it) in a process of its own:
its own session and process group (the task interrupts it with ``killpg``), SIGTERM when the
zygote dies (Linux's parent-death signal, set in the child itself: no ``preexec_fn``), its
working directory, environment and output files from the request. CUDA is never initialised
here, so a child's ``CUDA_VISIBLE_DEVICES`` still chooses its GPU.

The protocol, over a Unix socket, one connection per run: the task sends one JSON line
``{"cwd", "argv", "env", "stdout", "stderr"}``; the zygote answers ``{"pid": N}`` and, when the
child ends, ``{"exit": code}`` (negative: killed by that signal, as ``Popen.returncode``). A
connection that closes early kills its child's process group. The zygote ends, taking its
children with it, when its stdin (a pipe from the worker) reaches end of file: the worker died.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback

PR_SET_PDEATHSIG = 1
READY = "zygote: ready"
RUN_ENV_FILE = "run_env.json"  # what a child records about itself in the run's folder
# what the runner imports, so that a child only runs it (the runner module itself stays out of
# sys.modules: run as a program, it must be imported fresh)
PRELOAD = ("torch", "nbody_engine.config.loading", "nbody_engine.events", "nbody_engine.jobs.phases",
           "nbody_engine.reporting.drawing", "nbody_engine.reporting.plots")


def _die_with_parent() -> None:
    """SIGTERM to this process when its parent (the zygote) dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _run_child(request: dict) -> int:
    """In the forked child: become the run described by ``request`` and return its exit code."""
    os.chdir(request["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the zygote ignores Ctrl-C; a run answers it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _record_environment()
    import contextlib
    import runpy

    from ..reporting import drawing

    # matplotlib is imported here already: a drawing helper process would cost a cold start
    # per run for nothing, so the run draws its figures itself
    drawing.helper = contextlib.nullcontext
    sys.argv = ["nbody-runner", *request["argv"]]
    # the runner as a program, as ``python -m nbody_engine.runner`` runs it (it ends in sys.exit)
    runpy.run_module("nbody_engine.runner", run_name="__main__", alter_sys=True)
    return 0


def _record_environment() -> None:
    """Write the run's pid, GPU list and device (as its config resolves it here) to RUN_ENV_FILE."""
    import tomllib

    import torch

    try:
        with open("run.toml", "rb") as fh:
            wanted = tomllib.load(fh).get("device", "auto")
    except (OSError, tomllib.TOMLDecodeError):
        wanted = "auto"
    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if wanted == "auto" else wanted
    with open(RUN_ENV_FILE, "w") as fh:
        json.dump({"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                   "device": device}, fh)


def _fork(request: dict, zygote_pid: int, keep_closed) -> int:
    """Fork the run's child; returns its pid (in the zygote)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        if os.getppid() != zygote_pid:  # the zygote died before the signal was armed
            os._exit(143)
        keep_closed()
        code = _run_child(request)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the zygote's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return pid


class Zygote:
    """The zygote's loop: accept requests, fork children, report their ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(sys.stdin, selectors.EVENT_READ, "parent")
        self.buffers: dict[socket.socket, bytes] = {}
        self.children: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
        self.exit_fds: dict[int, int] = {}  # pid -> a pidfd of that child: readable the moment it ends
        self.pid = os.getpid()

    def _close_inherited(self) -> None:
        """In a child: drop the zygote's sockets."""
        self.selector.close()
        self.listener.close()
        for conn in self.buffers:
            conn.close()
        for fd in self.exit_fds.values():
            os.close(fd)

    def serve(self) -> None:
        try:
            os.write(sys.stdout.fileno(), f"{READY}\n".encode())
        except BrokenPipeError:  # the worker died while this zygote was starting: nothing to serve
            self._end()
            return
        while True:
            for key, _ in self.selector.select(timeout=0.5):
                if key.data == "parent":
                    if not os.read(sys.stdin.fileno(), 4096):
                        self._end()
                        return
                elif key.data == "accept":
                    conn, _ = self.listener.accept()
                    self.buffers[conn] = b""
                    self.selector.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "conn":
                    self._read(key.fileobj)
            self._reap()  # a child's pidfd woke the loop, or the timeout did

    def _read(self, conn: socket.socket) -> None:
        data = conn.recv(65536)
        if not data:  # the task went away: its run goes too
            self._drop(conn)
            return
        self.buffers[conn] += data
        if b"\n" in self.buffers[conn]:
            line, self.buffers[conn] = self.buffers[conn].split(b"\n", 1)
            pid = _fork(json.loads(line), self.pid, self._close_inherited)
            self.children[pid] = conn
            self._watch_exit(pid)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")

    def _watch_exit(self, pid: int) -> None:
        """Wake the loop the moment child ``pid`` ends, so that its task hears of it at once (a
        pidfd: Linux 5.3+; elsewhere the loop's timeout finds the child within half a second)."""
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return
        self.exit_fds[pid] = fd
        self.selector.register(fd, selectors.EVENT_READ, "exit")

    def _unwatch_exit(self, pid: int) -> None:
        fd = self.exit_fds.pop(pid, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)

    def _drop(self, conn: socket.socket) -> None:
        for pid, owner in list(self.children.items()):
            if owner is conn:
                _kill_group(pid, signal.SIGTERM)
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self._unwatch_exit(pid)
            if conn is not None:
                try:
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass

    def _end(self) -> None:
        """End the children, and remove the socket and its folder (made for this zygote)."""
        for pid in self.children:
            _kill_group(pid, signal.SIGTERM)
        self.listener.close()
        os.unlink(self.path)
        os.rmdir(os.path.dirname(self.path))


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def main(path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the sweep, which stops the runs itself
    for module in PRELOAD:  # the point of the zygote: imported once, shared by every child
        importlib.import_module(module)
    Zygote(path).serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # its children ended and its socket is gone: skip the seconds of finalizing torch
