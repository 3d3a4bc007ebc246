"""The Explorer's tabs as layouts of its widgets and live plots (built once per session, the
Simulation tab when first shown)."""

from __future__ import annotations

import io

import panel as pn

from .plot_style import theme_switch


def served_page(e) -> pn.template.BootstrapTemplate:
    """The page ``panel serve explorer`` serves for Explorer ``e``: run controls, status,
    progress and the theme switch in the template's header (which stays in view), the settings
    in the sidebar, the tabs in the main area.

    BootstrapTemplate, because it loads nothing from the internet (FastListTemplate fetches web
    fonts): the page works on an offline cluster node."""
    switch = theme_switch()
    # a reload ends this session and with it its job: no switching while one runs
    e.stop_button.param.watch(lambda event: setattr(switch, "disabled", not event.new), "disabled")
    return pn.template.BootstrapTemplate(title="nbody explorer", header=[e.header(), switch],
                                         sidebar=[e.sidebar()], main=[e.main()], sidebar_width=380)


def header(e) -> pn.Row:
    """Run controls, status line and progress: the part of the page that never scrolls away."""
    b = e.buttons
    # a widget, not a Markdown pane: in a notebook an updated pane sends its stylesheets again,
    # as links to Panel's CDN (which an offline node cannot reach)
    status = pn.widgets.StaticText(value=e.runner.param.status, margin=(0, 10), styles={"font-size": "13px"},
                                   sizing_mode="stretch_width")
    progress = pn.indicators.Progress(value=e.runner.param.progress, max=100, bar_color="primary", height=12,
                                      margin=(6, 10), sizing_mode="stretch_width")
    for button in (*b.values(), e.stop_button):
        button.param.update(width=150 if button is b["both"] else 100, height=36, sizing_mode="fixed")
    return pn.Row(b["train"], b["simulate"], b["both"], e.stop_button,
                  pn.Column(progress, status, min_width=300, sizing_mode="stretch_width"), e.paint_gate,
                  sizing_mode="stretch_width")


def training_tab(e) -> pn.Column:
    """The Training tab: the live errors, per-epoch curves and orbits of ``e``'s jobs, the
    smoothing of the per-epoch curves and the download of each plot's data."""
    epochs = pn.GridBox(*(pane(p) for p in e.live.per_epoch()), ncols=2, sizing_mode="stretch_width")
    smoothing = pn.widgets.FloatSlider(name="smoothing of the per-epoch curves (EMA weight, 0 = off)", start=0.0,
                                       end=0.99, step=0.01, value=e.live.smoothing, width=300, margin=(0, 10))
    smoothing.param.watch(lambda event: e.live.set_smoothing(event.new), "value")
    downloads = (csv_download(e.live, "energy_error", "|dE/E| per step"),
                 csv_download(e.live, "angular_momentum_error", "|dL/L| per step"),
                 csv_download(e.live, "epoch_metrics", "per-epoch metrics"),
                 csv_download(e.live, "orbit", "training orbit"))
    return pn.Column(
        pn.FlexBox(smoothing, *downloads, sizing_mode="stretch_width"),  # wraps on a narrow page (Jupyter)
        pn.Row(pane(e.live.energy_error()), pane(e.live.angular_momentum_error())),
        pn.Row(epochs, pn.Column(e.projection, pane(e.live.orbit_plot()), sizing_mode="stretch_width")),
        sizing_mode="stretch_width")


def simulation_tab(e) -> pn.Column:
    """The Simulation tab: the live simulation, the comparison of a finished one, Evaluate."""
    downloads = (csv_download(e.live, "simulation", "simulation errors and dt"),
                 csv_download(e.live, "sim_orbit", "simulation orbits"))
    return pn.Column(pn.Row(*downloads), pn.Row(*(pane(p) for p in e.live.simulation_plots())),
                     pane(e.live.orbit_plot("sim_orbit")),
                     e.sim_view,  # headed by what it compares (explorer/compare.py)
                     pn.pane.Markdown("### Is the learned step worth it?\n\nEvaluate compares the Simulate tab's "
                                      "`model_path` (empty: the checkpoint training with these settings "
                                      "writes; more in `eval_model_paths`) with seven baselines (fixed, classic, "
                                      "analytic, time-symmetric in one pass and iterated, drift-corrected, "
                                      "log-H) at each `eval_eps` and with IAS15 and WHFast, on `eval_systems` "
                                      "systems of each problem of `eval_suite` (`nbody-runner evaluate`; "
                                      "docs/SCIENCE.md). The default takes many minutes: lower "
                                      "`eval_systems` and `eval_long_periods` to look quickly."),
                     e.evaluate_button, e.eval_view, sizing_mode="stretch_width")

def export_tab(e) -> pn.Column:
    """The Export / import tab: the TOML, the headless command, the import."""
    return pn.Column(pn.pane.Markdown("Export the settings as the runner's TOML and run them headless "
                                      "with the command below; or import a TOML."),
                     pn.Row(e.mode_select, e.download, e.upload), e.command_box, e.toml_preview,
                     sizing_mode="stretch_width")


def pane(fig) -> pn.pane.Bokeh:
    return pn.pane.Bokeh(fig, sizing_mode="stretch_width")


def csv_download(live, name: str, what: str) -> pn.widgets.FileDownload:
    """A button that downloads what live source ``name`` holds now as ``<run>_<name>.csv``."""
    def table() -> io.StringIO:
        button.filename = live.csv_filename(name)  # the run shown now (FileDownload reads it after this)
        return io.StringIO(live.csv(name))

    button = pn.widgets.FileDownload(callback=table, filename=f"{name}.csv", label=f"CSV: {what}",
                                     button_type="light", height=32, margin=(12, 5), sizing_mode="fixed",
                                     width=max(120, 9 * len(what)))
    return button


def lazy(build, what: str) -> pn.param.ParamFunction:
    """A tab's content, built when the tab is first shown: the line 'Building the ``what``
    tab ...' goes to the browser at once and the content replaces it at the server's next
    tick (a tab takes seconds to build on a busy machine; a blank tab looks broken)."""
    def first_shown() -> pn.Column:
        holder = pn.Column(pn.Row(pn.indicators.LoadingSpinner(value=True, size=20, margin=(8, 5)),
                                  pn.pane.Markdown(f"Building the {what} tab ...", margin=(0, 5))),
                           sizing_mode="stretch_width")
        pn.state.execute(lambda: setattr(holder, "objects", [build()]), schedule=True)
        return holder

    return pn.param.ParamFunction(pn.bind(first_shown), lazy=True, sizing_mode="stretch_width")


def load_notebook_extension() -> None:
    """Load Panel's notebook extension with Tabulator into this kernel, with its resources
    inline, unless that is done (what ``pn.extension('tabulator', inline=True)`` would do)."""
    if not pn.extension._loaded or "tabulator" not in pn.extension._loaded_extensions:
        pn.extension("tabulator", inline=True)
