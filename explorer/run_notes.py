"""The Runs tab's notes and tags of one run: typed in the page, kept in the run's folder as
``notes.json`` (:func:`nbody_engine.runs.directory.write_notes`, read back through
:func:`nbody_engine.runs.reader.read_notes`), so a headless run, a sweep's run and a run made here
carry them alike and they travel with the folder.

Two sessions may edit the same run: a save that finds the file changed since this page read it
writes nothing and says so (the text typed stays in the boxes); saving again replaces it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import panel as pn

from nbody_engine.config.errors import InputError
from nbody_engine.runs.directory import write_notes
from nbody_engine.runs.reader import read_notes


def parse_tags(text: str) -> list[str]:
    """Tags typed with commas between them, stripped, empty ones and repeats left out, in order."""
    return list(dict.fromkeys(tag.strip() for tag in (text or "").split(",") if tag.strip()))


class NotesEditor:
    """Notes and tags of the run named by :meth:`show`; ``on_saved(run)`` is called after a save."""

    def __init__(self, data_dir: Path, on_saved: Callable[[str], None]) -> None:
        self.data_dir = data_dir
        self.on_saved = on_saved
        self.run: str | None = None
        self._read: dict | None = None  # the notes as this page read them: a save checks they are still so
        self.title = pn.pane.Markdown("", margin=(0, 10))
        self.tags = pn.widgets.TextInput(label="Tags (commas between them)", placeholder="baseline, kepler",
                                         width=320)
        self.notes = pn.widgets.TextAreaInput(label="Notes", placeholder="what this run is for, what it showed",
                                              auto_grow=True, rows=2, max_rows=12, sizing_mode="stretch_width")
        self.save_button = pn.widgets.Button(label="Save notes and tags", color="primary", align="end", width=180,
                                             height=32, sizing_mode="fixed")
        self.message = pn.pane.Markdown("", margin=(0, 10))
        self.save_button.on_click(lambda _e: self.save())
        self.layout = pn.Column(self.title, pn.Row(self.tags, self.notes, self.save_button,
                                                   sizing_mode="stretch_width"),
                                self.message, visible=False, sizing_mode="stretch_width")

    def show(self, run: str | None) -> None:
        """Edit ``run``'s notes (None: hide the editor). The run shown already keeps what is typed."""
        if run == self.run:
            return
        self.run = run
        self.layout.visible = run is not None
        self.message.object = ""
        if run is None:
            return
        self.title.object = f"**Notes and tags of '{run}'** (saved in `{self.data_dir / run / 'notes.json'}`)"
        try:
            self._read = read_notes(self.data_dir / run)
        except (OSError, ValueError) as err:
            self._read = None
            self.message.object = f"**cannot read the notes:** {err}. Saving replaces them."
        self._fill(self._read or {"notes": "", "tags": []})

    def _fill(self, doc: dict) -> None:
        # value_input too: a save reads it (what is typed, before the box loses focus), and
        # setting value alone leaves it behind
        for box, text in ((self.tags, ", ".join(doc["tags"])), (self.notes, doc["notes"])):
            box.param.update(value=text, value_input=text)

    def save(self) -> bool:
        """Write the typed notes and tags into the run's folder; False (with the reason shown) if not."""
        if self.run is None:
            return False
        root = self.data_dir / self.run
        try:
            now = read_notes(root)
        except (OSError, ValueError):
            now = None  # damaged: replaced by what is typed
        if now is not None and self._read is not None and now != self._read:
            self._read = now
            self.message.object = (f"**not saved:** the notes of '{self.run}' changed since this page read them "
                                   f"(now tags: {', '.join(now['tags']) or 'none'}; notes: {now['notes']!r}). "
                                   "Save again to replace them with yours.")
            return False
        doc = {"notes": self.notes.value_input, "tags": parse_tags(self.tags.value_input)}
        try:
            write_notes(root, doc["notes"], doc["tags"])
        except (OSError, InputError) as err:
            self.message.object = f"**not saved:** {err}"
            return False
        self._read = doc
        self._fill(doc)
        self.message.object = f"Saved the notes and tags of '{self.run}'."
        self.on_saved(self.run)
        return True

    def panel(self) -> pn.Column:
        return self.layout
