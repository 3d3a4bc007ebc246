"""Entry point of ``panel serve explorer``: one Explorer per browser session."""

import panel as pn

from explorer import Explorer

pn.extension("tabulator", notifications=True, sizing_mode="stretch_width")

app = Explorer()
pn.template.FastListTemplate(
    title="nbody explorer: learned time steps for N-body integration",
    sidebar=[app.sidebar()],
    main=[app.main()],
    sidebar_width=380,
).servable()
