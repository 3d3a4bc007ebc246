"""The Dask worker plugin that warms a worker: its zygote (:mod:`.warm`) starts with the worker,
so even the worker's first run starts warm, and ends with it. Kept apart from :mod:`.warm`,
which the tasks import, because it imports ``distributed`` at once."""

from __future__ import annotations

import threading

from distributed import WorkerPlugin

from .warm import ZYGOTE


class WarmRunsPlugin(WorkerPlugin):
    name = "nbody-warm-runs"

    def setup(self, worker) -> None:
        # in a thread: the worker's event loop must not wait seconds for torch to import
        threading.Thread(target=_warm_up, daemon=True, name="nbody-zygote-start").start()

    def teardown(self, worker) -> None:
        ZYGOTE.stop()


def _warm_up() -> None:
    try:
        ZYGOTE.ensure()
    except OSError:  # the first run tries again and records why it could not
        pass
