"""Entry point of ``nbody-explorer`` (``panel serve explorer``): one Explorer per browser session.

BootstrapTemplate, because it loads nothing from the internet (FastListTemplate fetches web
fonts): the page works on an offline cluster node. The run controls, status and progress sit
in the template's header, which stays in view, with the light/dark theme switch (the page is
built in the theme its ``?theme=`` query names: Panel's ``default`` or ``dark``)."""

import panel as pn

from explorer import Explorer
from explorer.plot_style import theme_switch

pn.extension("tabulator", notifications=True, sizing_mode="stretch_width")

app = Explorer()
switch = theme_switch()
# a reload ends this session and with it its job: no switching while one runs
app.stop_button.param.watch(lambda event: setattr(switch, "disabled", not event.new), "disabled")
pn.template.BootstrapTemplate(
    title="nbody explorer",
    header=[app.header(), switch],
    sidebar=[app.sidebar()],
    main=[app.main()],
    sidebar_width=380,
).servable(title="nbody explorer: learned time steps for N-body integration")
