"""The engine's error types: each carries one line a user can act on."""


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
