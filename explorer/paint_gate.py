"""Flow control of the live plots: the page says when it has drawn what it was sent.

Drawing a batch of streamed rows costs the browser far more than sending it costs the server:
every figure whose source changed is repainted, and BokehJS reads each visual's colours through
the page's CSS cascade (``getComputedStyle`` per axis label, legend item and glyph: 2,900 reads,
about 0.3 s per repaint of the Training tab on a busy two-core machine). Sent five times a
second regardless, the repaints queued up, kept the page's main thread busy 70-85% of the time,
and a click waited seconds for its turn (docs/BENCHMARKS.md, "The page under a streaming run").

So the session sends the next batch only when the page has drawn the last one, and not before
as long again as that drawing took: the page spends at most about half its time on the plots,
and a click is answered between two repaints. A fast page gets batches as often as the session
drains (5 Hz); a slow one gets fewer, larger batches; nothing is dropped. A page that does not
answer (a background browser tab draws nothing, a notebook output not shown) gets a batch every
``ANSWER_TIMEOUT_S``; until the first answer (a script, an in-process test, a page still
loading) there is no flow control at all.
"""

from __future__ import annotations

import math
import time

import param
from panel.custom import JSComponent

ANSWER_TIMEOUT_S = 2.0  # a page that has not said it drew the last batch gets the next one after this
DUTY = 1.0  # the page rests this many times as long as its last drawing took before the next batch


class PaintGate(JSComponent):
    """An invisible part of the page that answers each batch (``sent``) once the frame after it
    is drawn (``painted``, with ``paint_ms`` from its arrival to then)."""

    sent = param.Integer(0, doc="batches sent to the page")
    painted = param.Integer(0, doc="the last batch the page has drawn")
    paint_ms = param.Number(0.0, doc="milliseconds from that batch's arrival to the frame after it")

    # requestAnimationFrame runs before the next frame is drawn; a task queued from there runs
    # after it (when the page is in a background tab, neither runs: the timeout takes over)
    _esm = """
    export function render({ model }) {
      model.on("sent", () => {
        const batch = model.sent, arrived = performance.now()
        requestAnimationFrame(() => setTimeout(() => {
          model.paint_ms = performance.now() - arrived
          model.painted = batch
        }, 0))
      })
      return document.createElement("span")
    }
    """

    def __init__(self, **params) -> None:
        params.setdefault("width", 0)
        params.setdefault("height", 0)
        params.setdefault("margin", 0)
        params.setdefault("sizing_mode", "fixed")
        super().__init__(**params)
        self.answers = 0
        self._sent_at = -math.inf
        self._painted_at = -math.inf

    @param.depends("painted", watch=True)
    def _on_painted(self) -> None:
        self.answers += 1
        self._painted_at = time.monotonic()

    def open(self, now: float | None = None) -> bool:
        """Whether the next batch may be sent now."""
        if self.answers == 0:
            return True
        now = time.monotonic() if now is None else now
        if self.painted < self.sent:
            return now - self._sent_at >= ANSWER_TIMEOUT_S
        return now - self._painted_at >= DUTY * self.paint_ms / 1000

    def mark_sent(self) -> None:
        """Call with the batch, inside the same ``pn.io.hold()``: the page answers this number."""
        self._sent_at = time.monotonic()
        self.sent += 1
