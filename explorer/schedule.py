"""Periodic callbacks on whatever loop drives this session: the server session's document under
``panel serve``, the kernel's event loop in Jupyter. A plain script has neither (tests build an
Explorer in-process and call its drain themselves): nothing is scheduled there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import panel as pn


def has_session_loop() -> bool:
    """True in a server session or a notebook kernel (a running asyncio loop in this thread)."""
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def every(callback: Callable[[], object], period_ms: int):
    """Call ``callback`` every ``period_ms`` on the session's loop; returns the PeriodicCallback
    (``.stop()`` ends it), or None where no loop drives this session."""
    if not has_session_loop():
        return None
    return pn.state.add_periodic_callback(callback, period=period_ms)
