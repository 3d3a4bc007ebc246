"""What every plot of the page shares: tick labels on log axes, legends beside the data, the
exponential moving average of the per-epoch curves, and the light/dark theme switch."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import CustomJSTickFormatter

# Bokeh's LogTickFormatter falls back to '1.000e-15' when an axis spans less than about two
# decades (ticks that are not all powers of ten): the shortest exact form reads better, in one
# style per axis (plain numbers only when every tick reads well as one).
LOG_TICKS_JS = """
const short = (x) => Number(x.toPrecision(3));
if (tick === 0 || !isFinite(tick)) return String(tick);
const plain = ticks.every((t) => t === 0 || (Math.abs(t) >= 1e-3 && Math.abs(t) < 1e4));
return plain ? String(short(tick)) : short(tick).toExponential().replace("e+", "e");
"""
DARK_BACKGROUND = "#212529"  # the dark Bootstrap theme's page colour


def log_ticks() -> CustomJSTickFormatter:
    """A formatter for a log axis: '1e-15', '2.5e-15' (or '0.01', '0.025', '300' on an axis whose
    ticks all lie in [1e-3, 1e4)); a new one per figure: a Bokeh model belongs to one document."""
    return CustomJSTickFormatter(code=LOG_TICKS_JS)


def clean_log_ticks(fig) -> None:
    """Give every log axis of a Bokeh figure :func:`log_ticks`."""
    for axis in (*fig.xaxis, *fig.yaxis):
        if type(axis).__name__ == "LogAxis":
            axis.formatter = log_ticks()


def hv_clean_log_ticks(plot, _element) -> None:
    """The same as a HoloViews hook: ``.opts(hooks=[hv_clean_log_ticks])``."""
    clean_log_ticks(plot.state)


def legend_beside(fig) -> None:
    """Move a figure's legend to the right of its plot area, where it never covers the data."""
    for legend in list(fig.legend):
        if legend in fig.center:
            fig.center.remove(legend)
            fig.add_layout(legend, "right")
        legend.update(location="top_left", background_fill_alpha=0.0, border_line_alpha=0.0,
                      label_text_font_size="8pt", glyph_width=14, spacing=0, padding=4, margin=4)
        if pn.config.theme == "dark":  # a hidden item is veiled in the page's colour, not in white
            legend.inactive_fill_color = DARK_BACKGROUND


def ema(values, weight: float, log: bool = False, state: tuple[float, int] = (0.0, 0)):
    """The exponential moving average of ``values`` (n,) with ``weight`` in [0, 1) (0: the values
    themselves), debiased as TensorBoard does (the first points are not pulled towards 0).
    On a log axis (``log``) it averages log10 of the values, so a decade counts the same
    everywhere. Non-finite values are skipped (NaN out, the average unchanged). ``state`` is what
    a previous call returned, so a stream is smoothed chunk by chunk; returns (smoothed, state)."""
    total, count = state
    out = np.full(len(values), np.nan)
    for k, x in enumerate(np.asarray(values, dtype=float)):
        if not np.isfinite(x) or (log and x <= 0):
            continue
        total = weight * total + (1.0 - weight) * (np.log10(x) if log else x)
        count += 1
        mean = total / (1.0 - weight**count)
        out[k] = 10.0**mean if log else mean
    return out, (total, count)


def theme_switch() -> pn.widgets.Button:
    """A button that reloads the page in the other theme (Panel's templates take the theme
    from the ``?theme=`` query when a session starts; nothing switches a built page)."""
    other = "default" if pn.config.theme == "dark" else "dark"
    button = pn.widgets.Button(label="Light theme" if other == "default" else "Dark theme", color="light",
                               width=110, height=36, sizing_mode="fixed")
    button.js_on_click(code=f"""
const url = new URL(window.location.href);
url.searchParams.set("theme", "{other}");
window.location.assign(url.toString());
""")
    return button
