"""Configs written out: the TOML that :func:`~.loading.load_configs` reads back into the same
configs, and the README's reference table of every key, both from the schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import param
import tomli_w

from .keytypes import item_bounds, key_type
from .loading import TRAINING_SECTIONS, config_values
from .schema import KEYS, SECTIONS, Config, flags_for, section_keys


def to_toml(configs: Mapping[str, Config], skip_defaults: bool = False) -> str:
    """TOML that :func:`load_configs` turns back into the same configs.

    Keys equal in every phase go to the top level; the rest into ``[train]``/``[simulate]``,
    except the training keys, which [simulate] may not hold: a simulation's own values of them,
    which it never reads, are left out.
    Keys whose value is None are left out (None is their default and TOML has no null), and
    with ``skip_defaults`` so is every key at its default in every phase.
    """
    def keep(key, value):
        return value is not None and not (skip_defaults and value == Config.param[key].default)

    values = {ph: {k: v for k, v in config_values(cfg).items() if keep(k, v) or
                   any(keep(k, getattr(other, k)) for other in configs.values())}
              for ph, cfg in configs.items()}
    values = {ph: {k: v for k, v in vals.items() if v is not None} for ph, vals in values.items()}
    phases = list(values)
    shared = {k: v for k, v in values[phases[0]].items() if all(values[p].get(k, None) == v for p in phases)}
    doc: dict[str, Any] = dict(shared)
    for ph in phases:
        own = {k: v for k, v in values[ph].items() if k not in shared
               and not (ph == "simulate" and KEYS[k] in TRAINING_SECTIONS)}
        if own:
            doc[ph] = own
    return tomli_w.dumps(doc)


def sections_table() -> str:
    """The README's configuration reference, generated from the schema."""
    lines = []
    for section in SECTIONS:
        lines += [f"### {section.title}", "", "| TOML key | CLI flag | Description | Values | Default |",
                  "| --- | --- | --- | --- | --- |"]
        for key in section_keys(section):
            p = section.param[key]
            flags = ", ".join(f"`{f}`" for f in flags_for(key))
            doc = p.doc.replace("|", "\\|")
            lines.append(f"| `{key}` | {flags} | {doc} | {value_range(p)} | `{_toml_literal(p.default)}` |")
        lines.append("")
    return "\n".join(lines)


def value_range(p: param.Parameter) -> str:
    """What a key accepts, in interval notation: ``[1, 1e7]``, ``(0, inf)``, ``1-16 items in [1, 16384]``."""
    kind = key_type(p).name
    if kind in ("integer", "number"):
        return _interval(p.bounds, p.inclusive_bounds)
    if kind == "list":
        low, high = p.bounds or (0, None)
        count = f"{low}" if low == high else f"{low}-{high}" if high is not None else f"{low} or more"
        bounds = item_bounds(p)
        return f"{count} items" + (f" in {_interval(bounds, (True, True))}" if bounds else "")
    if kind == "choice":
        return " / ".join(f"`{o}`" for o in p.objects)
    return {"boolean": "`true` / `false`", "paths": "paths"}.get(kind, "text")


def _interval(bounds, inclusive) -> str:
    low, high = bounds or (None, None)
    left = "(-inf" if low is None else f"[{_short(low)}" if inclusive[0] else f"({_short(low)}"
    right = "inf)" if high is None else f"{_short(high)}]" if inclusive[1] else f"{_short(high)})"
    return f"{left}, {right}"


def _short(value: float) -> str:
    """Powers of ten from 1e5 on as 1eN; other numbers as written."""
    if isinstance(value, int) and value >= 10**5 and str(value).rstrip("0") == "1":
        return f"1e{len(str(value)) - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _toml_literal(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
