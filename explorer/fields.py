"""The settings of the sidebar, made from the schema: one field per key, one card per section.

A key's widget comes from one table, :data:`WIDGETS`, indexed by the engine's key type
(:func:`nbody_engine.config.keytypes.key_type`): numbers, integers and lists are typed as text and go
through the CLI's own parsing and validation (``parse_text`` then ``check_value``), so a refused
value gets the CLI's one-line message, next to the widget and as a notification, and the key
keeps its last good value (Panel's numeric inputs would clamp or drop bad text in the browser
without a word). Keys with ``softbounds`` also get a slider over that range.

A field marks a key whose value differs from its baseline (the value the page opened with, or
for the Simulate tab the shared value it overrides) with a reset button. Cards build their fields
the first time they open, so a new session costs only the cards' headers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import panel as pn
import param

from nbody_engine.config.errors import InputError
from nbody_engine.config.keytypes import key_type
from nbody_engine.config.loading import check_value, parse_text
from nbody_engine.config.schema import Config, PATH_KEYS, SECTIONS, Section, section_keys

from .files import check_confined

WIDTH = 300
REPEAT_S = 1.0  # the same refusal again within this many seconds is one refusal


def _text_or_none(text: str) -> str | None:
    return text.strip() or None


def _shown_number(value) -> str:
    return "" if value is None else repr(value)


def _read_number(key: str, text: str):
    text = text.strip()
    return None if text == "" and Config.param[key].allow_None else parse_text(key, text)


def _shown_list(value) -> str:
    return "" if value is None else ", ".join(repr(v) for v in value)


def _read_list(key: str, text: str):
    items = [t for t in re.split(r"[,\s\[\]]+", text) if t]
    return None if not items and Config.param[key].allow_None else parse_text(key, items)


def _read_paths(key: str, text: str):
    """Paths separated by commas or new lines (a path may hold spaces)."""
    return parse_text(key, [t.strip() for t in re.split(r"[,\n]", text) if t.strip()])


def _text_box(key: str, p: param.Parameter) -> pn.widgets.Widget:
    return pn.widgets.TextInput(placeholder="(none)" if p.allow_None else "", width=WIDTH - 60)


@dataclass(frozen=True)
class WidgetKind:
    """How keys of one type are edited: ``make(key, p)`` builds the widget, ``show(value)`` turns
    the key's value into the widget's, ``read(key, widget_value)`` back into a TOML-like value
    for ``check_value``; ``slider(low, high)`` makes the slider of keys with softbounds (None: no slider)."""

    make: Callable[[str, param.Parameter], pn.widgets.Widget]
    show: Callable[[Any], Any]
    read: Callable[[str, Any], Any]
    slider: Callable[[float, float], pn.widgets.Widget] | None = None


WIDGETS: dict[str, WidgetKind] = {
    "boolean": WidgetKind(lambda key, p: pn.widgets.Select(options={"false": False, "true": True}, width=WIDTH - 60),
                          bool, lambda key, v: v),
    "integer": WidgetKind(_text_box, _shown_number, _read_number,
                          lambda low, high: pn.widgets.IntSlider(start=low, end=high)),
    "number": WidgetKind(_text_box, _shown_number, _read_number,
                         lambda low, high: pn.widgets.FloatSlider(start=low, end=high, step=(high - low) / 200)),
    "choice": WidgetKind(lambda key, p: pn.widgets.Select(options=list(p.objects), width=WIDTH - 60),
                         lambda v: v, lambda key, v: v),
    "list": WidgetKind(_text_box, _shown_list, _read_list),
    "paths": WidgetKind(_text_box, lambda v: ", ".join(v or []), _read_paths),
    "text": WidgetKind(_text_box, lambda v: v or "", lambda key, v: _text_or_none(v)),
}


def _slider(kind: WidgetKind, p: param.Parameter) -> pn.widgets.Widget | None:
    """A slider over the key's softbounds, where its kind has one and it declares them."""
    if kind.slider is None or p.softbounds is None:
        return None
    slider = kind.slider(*p.softbounds)
    slider.param.update(value=slider.start, show_value=False, width=WIDTH - 60, margin=(0, 10))
    return slider


class KeyField(pn.viewable.Viewer):
    """One key of ``config``: its widget (labelled with the TOML key, the key's doc as tooltip),
    a slider over its softbounds, a reset button while it differs from the baseline, and the
    message of the last refused value. ``where`` names the tab in messages; ``on_refused``
    receives each refusal's message (the page shows it as a notification)."""

    def __init__(self, config: Config, key: str, where: str, on_refused: Callable[[str], None],
                 baseline: Config) -> None:
        super().__init__()
        self.config, self.key, self.where, self.on_refused, self.baseline = config, key, where, on_refused, baseline
        p = Config.param[key]
        self.kind = WIDGETS[key_type(p).name]
        self.widget = self.kind.make(key, p)
        self.widget.param.update(label=key, description=p.doc)
        self.slider = _slider(self.kind, p)
        self.reset = pn.widgets.Button(label="reset", width=70, margin=(27, 0, 0, 0),
                                       description="changed from the default; reset it")
        self.message = pn.pane.Alert("", alert_type="danger", visible=False, width=WIDTH - 10, margin=(0, 10))
        self._refused_at = 0.0
        self._show(getattr(config, key))
        self.widget.param.watch(self._from_widget, "value")
        if self.slider is not None:
            self.slider.param.watch(self._from_slider, "value_throttled")
        self.reset.on_click(lambda _e: self._set(self.default()))
        config.param.watch(lambda e: self._show(e.new), key)
        baseline.param.watch(lambda _e: self._mark(), key)
        self.layout = pn.Column(pn.Row(self.widget, self.reset), *([self.slider] if self.slider else []),
                                self.message, margin=0)

    def __panel__(self):
        return self.layout

    def default(self):
        """The value reset restores: the baseline config's."""
        return getattr(self.baseline, self.key)

    @property
    def changed(self) -> bool:
        return getattr(self.config, self.key) != self.default()

    def _show(self, value) -> None:
        self.widget.value = self.kind.show(value)
        if self.slider is not None and value is not None:
            self.slider.value = min(max(value, self.slider.start), self.slider.end)
        self._mark()

    def _mark(self) -> None:
        self.reset.visible = self.changed

    def _from_widget(self, event) -> None:
        self._set(self.kind.read(self.key, event.new))

    def _from_slider(self, event) -> None:
        self._set(event.new)

    def _set(self, value) -> None:
        """Check ``value`` as the CLI would and apply it, or refuse it with the CLI's message."""
        try:
            checked = check_value(self.key, value, self.where)
            if self.key in PATH_KEYS and checked:
                check_confined(Config(**{self.key: checked}), self.where)
        except InputError as err:
            self._refuse(str(err))
            return
        if checked != getattr(self.config, self.key):
            self.message.visible = False
            setattr(self.config, self.key, checked)

    def _refuse(self, message: str) -> None:
        # the browser may commit one typed text twice (input and Enter): one notification for both
        repeated = self.message.visible and self.message.object == message and \
            time.monotonic() - self._refused_at < REPEAT_S
        self.message.object = message
        self.message.visible = True
        self._refused_at = time.monotonic()
        self._show(getattr(self.config, self.key))  # the widget goes back to the key's last good value
        if not repeated:
            self.on_refused(message)


def matches(key: str, query: str) -> bool:
    """Whether ``query`` (words, any case) occurs in the key's name or its doc."""
    text = f"{key} {Config.param[key].doc or ''}".lower()
    return all(word in text for word in query.lower().split())


class SectionCard(pn.viewable.Viewer):
    """A collapsed card of one schema section; its fields are built the first time it opens.
    The title counts the section's keys that differ from their baseline."""

    def __init__(self, section: type[Section], make_field: Callable[[str], KeyField], config: Config,
                 baseline: Config) -> None:
        super().__init__()
        self.section, self.make_field, self.config, self.baseline = section, make_field, config, baseline
        self.keys = section_keys(section)
        self.fields: dict[str, KeyField] = {}
        self.card = pn.Card(title=self._title(), collapsed=True, sizing_mode="stretch_width", margin=(2, 0))
        self.card.param.watch(lambda e: self.build() if not e.new else None, "collapsed")
        for watched in (config, baseline):
            watched.param.watch(lambda *_events: self._retitle(), self.keys)

    def __panel__(self):
        return self.card

    def build(self) -> None:
        if not self.fields:
            self.fields = {key: self.make_field(key) for key in self.keys}
            # one column inside the card: opening a card shows its children, whatever their own
            # visibility (the search's), so the fields sit one level further down
            self.card.objects = [pn.Column(*self.fields.values(), margin=0, sizing_mode="stretch_width")]

    def changed_keys(self) -> list[str]:
        return [k for k in self.keys if getattr(self.config, k) != getattr(self.baseline, k)]

    def _title(self) -> str:
        n = len(self.changed_keys())
        return self.section.title + (f" · {n} changed" if n else "")

    def _retitle(self) -> None:
        self.card.title = self._title()

    def search(self, query: str) -> None:
        """Show only the fields matching ``query`` (open); an empty query shows every card."""
        hits = [k for k in self.keys if matches(k, query)] if query else self.keys
        self.card.visible = bool(hits)
        if not query:
            for field in self.fields.values():
                field.layout.visible = True
            return
        if hits:
            self.build()
            for key, field in self.fields.items():
                field.layout.visible = key in hits
            self.card.collapsed = False


class SettingsPanel(pn.viewable.Viewer):
    """Every key of ``config`` in section cards, with a search box over key names and docs.

    ``baseline``: the config whose values count as "unchanged" and that reset restores."""

    def __init__(self, config: Config, where: str, note: str, on_refused: Callable[[str], None],
                 baseline: Config) -> None:
        super().__init__()
        self.config = config
        self.fields: dict[str, KeyField] = {}

        def make_field(key: str) -> KeyField:
            self.fields[key] = KeyField(config, key, where, on_refused, baseline)
            return self.fields[key]

        self.cards = [SectionCard(sec, make_field, config, baseline) for sec in SECTIONS]
        self.search = pn.widgets.TextInput(placeholder="search keys (name or description)",
                                           sizing_mode="stretch_width")
        self.search.param.watch(lambda e: self.filter(e.new), "value_input")
        self.layout = pn.Column(pn.pane.Markdown(note, margin=(0, 10)), self.search, *self.cards,
                                sizing_mode="stretch_width")

    def __panel__(self):
        return self.layout

    def filter(self, query: str) -> None:
        for card in self.cards:
            card.search(query.strip())

    def field(self, key: str) -> KeyField:
        """The field of ``key``, building its card if it has not been opened yet."""
        if key not in self.fields:
            next(c for c in self.cards if key in c.keys).build()
        return self.fields[key]
