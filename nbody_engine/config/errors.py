"""The engine's error types: each carries one line a user can act on; and the one line for an
error of the operating system (:func:`os_error_line`)."""

import errno


class InputError(ValueError):
    """Bad input (config key, flag, file, checkpoint): the message says what and how to fix it."""


class NonFiniteStateError(RuntimeError):
    """The integration produced NaN or infinity; the message names the step and time."""


class RunCancelled(Exception):
    """Raised inside a run when its cancellation token is set."""


class TrainingStalled(RuntimeError):
    """A state was rejected ``max_retrain_steps`` times in a row."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so a run stops the same clean way."""


_FREE_SPACE = "free some space: the checkpoints written before stay, and --resume continues from the last"
_PERMISSIONS = "check its permissions, or run from a directory you can write to"
_OS_HINTS = {
    errno.ENOSPC: _FREE_SPACE,
    errno.EDQUOT: _FREE_SPACE,
    errno.EACCES: _PERMISSIONS,
    errno.EPERM: _PERMISSIONS,
    errno.EROFS: "run from a directory on a file system you can write to",
    errno.EEXIST: "a file is in the way: move it, or choose another save_name",
    errno.ENOTDIR: "a file is in the way of a folder on this path: move it, or choose another save_name",
}


def os_error_line(err: OSError) -> str:
    """One line for an error of the operating system (permissions, a full disk, a file in the
    way): the reason, the path, and what to do."""
    path = f" '{err.filename}'" if err.filename else ""
    reason = err.strerror or type(err).__name__
    hint = _OS_HINTS.get(err.errno)
    return f"{reason}:{path}" + (f"; {hint}" if hint else "")
