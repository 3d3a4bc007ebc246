"""Entry point of ``nbody-explorer`` (``panel serve explorer``): one Explorer per browser session,
on the page of :func:`explorer.page.served_page`, built in the theme its ``?theme=`` query names
(Panel's ``default`` or ``dark``).

A new session is what the server pays most for, so:
- the page is added to the document under one freeze of its model graph: Bokeh walks the
  whole graph once, not once per root the template adds (0.98 -> 0.65 s of server CPU per page
  request);
- Bokeh's validation of each new document is off (0.1 s per session): the page's models are
  the same in every session, and ``tests/test_explorer.py`` validates them.
"""

import panel as pn
from bokeh.settings import settings

from explorer import Explorer
from explorer.page import served_page

pn.extension("tabulator", notifications=True, sizing_mode="stretch_width")
settings.perform_document_validation.set_value(False)

app = Explorer()
with pn.state.curdoc.models.freeze():
    served_page(app).servable(title="nbody explorer: learned time steps for N-body integration")
