"""Report figures drawn in a helper process, off the critical path of a command-line run.

Importing matplotlib and drawing a report take about as long as a default two-body ``simulate``
takes to step (docs/BENCHMARKS.md). So ``nbody-runner`` opens :func:`helper` once
its configuration is checked: a second Python process (``python -m nbody_engine.reporting.drawing``)
imports matplotlib on another core while the run imports torch and steps, and draws each figure
the run hands it (the thinned curves of :mod:`.curves`: small arrays) while the run writes its
other outputs. The run waits for each figure before it reports its outputs, so a finished command
has written everything, as before.

Outside a :func:`helper` block (the explorer, notebooks, the engine called from Python), and
where the helper cannot start or has died, :func:`draw` draws in the calling thread.

The helper reads ``(name, args)`` pickles on its standard input, calls ``plots.<name>(*args)``
and answers each with a pickle ``(True, result)`` or ``(False, message)`` on its standard
output. It ignores Ctrl-C (the run answers it) and leaves at the end of its input (a run that
ended normally) or on SIGTERM (one that failed or was interrupted). SIGTERM unwinds a figure it
is writing, so that none is left half-written (:func:`~nbody_engine.runs.directory.atomic_path`); at any
other moment, importing matplotlib included, the helper leaves at once and without a word.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_helper: subprocess.Popen | None = None
_writing = False  # in the helper: a figure is being drawn


@contextmanager
def helper() -> Iterator[None]:
    """Draw this block's figures in a helper process, started now."""
    global _helper
    try:
        process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except (OSError, ValueError):  # no interpreter to start: draw in this process
        yield
        return
    _helper = process
    try:
        yield
    except BaseException:
        _stop(process, process.terminate)  # a figure it may be drawing is abandoned, not half-written
        raise
    else:
        _stop(process, process.stdin.close)  # every figure answered: it leaves at the end of its input
    finally:
        _helper = None


def _stop(process: subprocess.Popen, ask: Callable[[], None]) -> None:
    ask()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout):
        pipe.close()


def draw(name: str, *args) -> Callable[[], object]:
    """Start ``plots.<name>(*args)``; returns a function that waits for it and gives its result
    (an error in the drawing is raised there). Figures started together are waited for in the
    order they were started."""
    process = _helper
    if process is not None:
        try:
            pickle.dump((name, args), process.stdin)
            process.stdin.flush()
        except OSError:  # the helper is gone: draw here
            pass
        else:
            return lambda: _answer(process, name, args)
    result = _draw_here(name, args)
    return lambda: result


def _answer(process: subprocess.Popen, name: str, args: tuple):
    try:
        ok, value = pickle.load(process.stdout)
    except (EOFError, OSError, pickle.UnpicklingError):  # the helper died on the way: draw here
        return _draw_here(name, args)
    if not ok:
        raise RuntimeError(f"drawing {name} failed: {value}")
    return value


def _draw_here(name: str, args: tuple):
    from . import plots

    return getattr(plots, name)(*args)


def _serve() -> None:
    """The helper's loop (see the module's docstring)."""
    global _writing
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave)
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # anything printed stays off the answers' pipe
    from . import plots

    while True:
        try:
            name, args = pickle.load(requests)
        except EOFError:
            os._exit(0)  # nothing left to write: skip the interpreter's teardown (slow with matplotlib loaded)
        _writing = True
        try:
            answer = (True, getattr(plots, name)(*args))
        except Exception as err:  # noqa: BLE001 - every failure goes back to the run, which raises it
            answer = (False, f"{type(err).__name__}: {err}")
        finally:
            _writing = False
        pickle.dump(answer, answers)
        answers.flush()


def _leave(_signum, _frame) -> None:
    """The helper's SIGTERM: unwind a figure being written (its temporary file is removed);
    otherwise leave now. An exception raised inside an import (matplotlib's loads numpy's C
    extensions) would surface as an ImportError with a traceback."""
    if _writing:
        sys.exit(0)
    os._exit(0)


if __name__ == "__main__":
    _serve()
