"""Widgets for the engine's schema: one widget per key, labelled with the TOML key, the key's
``doc`` as tooltip and its hard bounds as limits.

A value the schema refuses never reaches the Config: the widget springs back to the current
value and ``on_error`` receives the same one-line message the CLI prints for that value.
"""

from __future__ import annotations

from collections.abc import Callable

import panel as pn
import param

from nbody_engine.config import check_value
from nbody_engine.errors import InputError
from nbody_engine.schema import PATH_KEYS, Config

from .files import check_confined

WIDTH = 300


def _bounds(p: param.Parameter) -> dict:
    lo, hi = p.bounds or (None, None)
    return {"start": lo, "end": hi}


def make_widget(key: str, value) -> pn.widgets.Widget:
    p = Config.param[key]
    common = {"label": key, "description": p.doc, "width": WIDTH}
    if isinstance(p, param.Boolean):
        return pn.widgets.Select(options={"false": False, "true": True}, value=value, **common)
    if isinstance(p, param.Selector):
        return pn.widgets.Select(options=list(p.objects), value=value, **common)
    if isinstance(p, param.Integer):
        return pn.widgets.IntInput(value=value, **_bounds(p), **common)
    if isinstance(p, param.Number):
        return pn.widgets.FloatInput(value=value, **_bounds(p), **common)
    if isinstance(p, param.List):
        return pn.widgets.LiteralInput(value=value, type=(list, type(None)), **common)
    return pn.widgets.TextInput(value=value or "", placeholder="(none)", **common)


def _widget_to_value(key: str, value):
    if isinstance(Config.param[key], param.String) and value == "":
        return None
    return value


class ConfigForm:
    """Two-way binding between a Config's keys and their widgets."""

    def __init__(self, config: Config, keys: list[str], on_error: Callable[[str], None]) -> None:
        self.config = config
        self.on_error = on_error
        self.widgets = {key: make_widget(key, getattr(config, key)) for key in keys}
        self._syncing = False
        for key, widget in self.widgets.items():
            widget.param.watch(lambda event, key=key: self._from_widget(key, event.new), "value")
        config.param.watch(self._from_config, list(keys))

    def _from_widget(self, key: str, value) -> None:
        if self._syncing:
            return
        try:
            checked = check_value(key, _widget_to_value(key, value), "Settings")
            if key in PATH_KEYS and checked:
                check_confined(Config(**{key: checked}), "Settings")
        except InputError as err:
            self.on_error(str(err))
            self._set_widget(key, getattr(self.config, key))
            return
        setattr(self.config, key, checked)

    def _from_config(self, *events) -> None:
        for event in events:
            self._set_widget(event.name, event.new)

    def _set_widget(self, key: str, value) -> None:
        widget = self.widgets[key]
        self._syncing = True
        try:
            widget.value = value if not isinstance(widget, pn.widgets.TextInput) else (value or "")
        finally:
            self._syncing = False
