"""Regenerate the README's configuration reference from the schema: python scripts/update_reference.py"""

import re
from pathlib import Path

from nbody_engine.config.export import sections_table

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
readme.write_text(pattern.sub(lambda _: f"{START}\n{sections_table()}\n{END}", text))
