"""The Explorer: edit every configuration key, run jobs in the background, watch them live,
export the TOML and the headless command that reproduce the run.

Two Config objects hold the settings: ``train`` (shared keys and training) and ``simulate``.
The simulate settings follow the train settings except for the keys changed in the
"Simulate" tab, which become that phase's ``[simulate]`` overrides in the exported TOML.
Every job runs from the exported TOML through the CLI's own loader, so the dashboard and
``nbody-runner`` cannot disagree.
"""

from __future__ import annotations

import io
import time

import panel as pn
import param

from nbody_engine.config import check_consistency, config_values, load_configs, parse_toml, to_toml
from nbody_engine.errors import InputError
from nbody_engine.events import CheckpointWritten, EpochFinished, RunFinished, RunStarted, TrajectoryChunk
from nbody_engine.schema import KEYS, SECTIONS, Config, section_keys

from .jobs import Job, JobDone
from .live import PROJECTIONS, LivePlots
from .runs_view import RunsView
from .schedule import every
from .sweeps_view import SweepsView
from .widgets import ConfigForm

MODES = {"train": "Train", "simulate": "Simulate", "both": "Train + simulate"}
LABELS = {**MODES, "evaluate": "Evaluate"}
DRAIN_PERIOD_MS = 200
# The dashboard opens on a run that shows something within seconds (configs/quick.toml's
# training settings) and simulates the family it trains on, num_orbits Kepler orbits with e in
# [e_min, e_max], rather than one random two-body system, which may be all but radial (the
# analytic step then loses a quarter of the energy in 10 periods); every other key starts at the
# schema default.
QUICK_START = {"epochs": 50, "steps_per_epoch": 4, "replay_steps": 50, "lr": 1e-3, "weight_decay": 0.0}
SIMULATE_START = {"multi_orbit_sim": True}


def _default_config(**start) -> Config:
    return Config(**QUICK_START, **start)


class Explorer(pn.viewable.Viewer):
    """The whole dashboard; ``Explorer()`` in a notebook, ``panel serve explorer`` on a server."""

    train = param.ClassSelector(class_=Config, doc="Shared and training settings")
    simulate = param.ClassSelector(class_=Config, doc="Simulation settings")
    status = param.String("Ready.", constant=True)
    export_mode = param.Selector(default="both", objects=list(MODES))

    def __init__(self, **params) -> None:
        params.setdefault("train", _default_config())
        params.setdefault("simulate", _default_config(**SIMULATE_START))
        super().__init__(**params)
        self._mirroring = self._loading = False
        self.last_checkpoint: str | None = None
        self._auto_model_path: str | None = None  # the simulate model_path a finished training filled in
        self.overrides: set[str] = {k for k in KEYS if getattr(self.simulate, k) != getattr(self.train, k)}
        self.job: Job | None = None
        self.live = LivePlots()
        self._callback = None
        self._started = 0.0
        self._epochs_total = 0
        self._build_widgets()
        self.train.param.watch(self._mirror_to_simulate, list(KEYS))
        self.simulate.param.watch(self._note_override, list(KEYS))
        self.simulate.param.watch(self._simulate_the_systems_set, ["num_particles", "ic_path", "use_train_ic"])
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: self.close())

    # settings ------------------------------------------------------------------------------
    def _mirror_to_simulate(self, *events) -> None:
        self._mirroring = True
        try:
            self.simulate.param.update(**{e.name: e.new for e in events if e.name not in self.overrides})
        finally:
            self._mirroring = False
        self._refresh_export()

    def _note_override(self, *events) -> None:
        if not self._mirroring:
            for e in events:
                (self.overrides.discard if e.new == getattr(self.train, e.name) else self.overrides.add)(e.name)
        self._refresh_export()

    def _simulate_the_systems_set(self, *_events) -> None:
        """The Simulate tab starts on Kepler orbits of the training family (SIMULATE_START); once
        the systems are set otherwise (more bodies, an IC file, the checkpoint's ICs), those are
        simulated, without Kepler orbits added. An imported TOML is taken as it is."""
        s = self.simulate
        if not self._loading and s.multi_orbit_sim and (s.num_particles != 2 or s.ic_path or s.use_train_ic):
            s.multi_orbit_sim = False

    def configs(self) -> dict[str, Config]:
        return {"train": self.train, "simulate": self.simulate}

    def toml_text(self) -> str:
        """The settings as the runner's TOML: shared keys on top, ``[simulate]`` overrides."""
        return to_toml(self.configs(), skip_defaults=True)

    def command(self, mode: str | None = None) -> str:
        name = self.train.save_name or "run"
        return f"nbody-runner {mode or self.export_mode} --config {name}.toml"

    def load_toml(self, text: str, source: str = "uploaded TOML") -> None:
        """Apply a TOML document through the CLI's loader; raises InputError on bad input."""
        configs = load_configs("both", parse_toml(text, source), run_defaults=False, source=source)
        train, sim = (config_values(configs[p]) for p in ("train", "simulate"))
        self._loading = True
        try:
            self.train.param.update(**train)
            self.simulate.param.update(**sim)
        finally:
            self._loading = False
        self.overrides = {k for k in KEYS if sim[k] != train[k]}
        self._refresh_export()

    # widgets -------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.train_form = ConfigForm(self.train, list(KEYS), self._show_error)
        self.sim_form = ConfigForm(self.simulate, list(KEYS), self._show_error)
        self.buttons = {mode: pn.widgets.Button(label=label, color="primary") for mode, label in MODES.items()}
        for mode, button in self.buttons.items():
            button.on_click(lambda _e, mode=mode: self.start(mode))
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", disabled=True)
        self.stop_button.on_click(lambda _e: self.stop())
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", bar_color="primary")
        self.status_pane = pn.pane.Markdown(self.status, sizing_mode="stretch_width")
        self.projection = pn.widgets.RadioButtonGroup(label="projection", options=list(PROJECTIONS), value="x-y")
        self.projection.param.watch(lambda e: setattr(self.live, "projection", e.new), "value")
        self.download = pn.widgets.FileDownload(callback=lambda: io.StringIO(self.toml_text()),
                                                filename="run.toml", label="Download TOML", color="success")
        self.command_box = pn.widgets.TextInput(label="Headless command", value=self.command(),
                                                sizing_mode="stretch_width")
        self.toml_preview = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.upload = pn.widgets.FileInput(accept=".toml", label="Import TOML")
        self.upload.param.watch(self._on_upload, "value")
        self.mode_select = pn.widgets.RadioButtonGroup(options=list(MODES), value=self.export_mode)
        self.mode_select.link(self, value="export_mode")
        self.param.watch(lambda _e: self._refresh_export(), "export_mode")
        self.sim_view = pn.Column(sizing_mode="stretch_width")
        self.eval_view = pn.Column(sizing_mode="stretch_width")
        self.evaluate_button = pn.widgets.Button(label="Evaluate: learned vs the baselines (eps sweep)",
                                                 color="primary")
        self.evaluate_button.on_click(lambda _e: self.start("evaluate"))
        self.runs = RunsView(self.live, feed=self.consume)
        self.sweeps = SweepsView(self.toml_text)
        self._refresh_export()

    def _show_error(self, message: str) -> None:
        self.error.object = f"**error:** {message}"
        self.error.visible = True

    def _set_status(self, text: str) -> None:
        with param.edit_constant(self):
            self.status = text
        self.status_pane.object = text

    def _refresh_export(self) -> None:
        if not hasattr(self, "command_box"):
            return
        name = self.train.save_name or "run"
        self.download.filename = f"{name}.toml"
        self.command_box.value = self.command()
        self.toml_preview.object = f"```toml\n{self.toml_text()}```"

    def _on_upload(self, event) -> None:
        if not event.new:
            return
        try:
            self.load_toml(event.new.decode("utf-8", errors="replace"), f"'{self.upload.filename}'")
        except InputError as err:
            self._show_error(str(err))
            return
        self.error.visible = False
        self._set_status(f"Loaded {self.upload.filename}.")

    # jobs ----------------------------------------------------------------------------------
    def start(self, mode: str) -> bool:
        """Start a job of ``mode`` in the background; False (with the reason shown) if not."""
        if self.job is not None and self.job.running:
            self._show_error("a job is already running in this session; stop it first")
            return False
        try:
            self._fill_run_identity()
            for cfg in self.configs().values():
                check_consistency(cfg, mode)
        except InputError as err:
            self._show_error(str(err))
            return False
        if not Job.slot_free():
            self._show_error("the server is busy: every job slot is taken; try again when a run ends")
            return False
        if mode == "both" and self.simulate.model_path is not None and \
                self.simulate.model_path == self._auto_model_path:
            # 'Train + simulate' simulates the checkpoint this training writes, not the one an
            # earlier 'Train' left in the Simulate settings.
            self.simulate.model_path = self.train.model_path
        self.error.visible = False
        if mode in MODES:
            self.export_mode = mode
        self.live.reset({"E": (self.train.E_lower, self.train.E_upper), "L": (self.train.L_lower, self.train.L_upper),
                         "threshold": self.train.energy_threshold})
        self.job = Job(mode, self.toml_text())
        self._started = time.monotonic()
        self._epochs_total = self.train.epochs if mode != "simulate" else 0
        self.progress.value = 0
        self._set_status(f"{LABELS[mode]}: starting '{self.train.save_name}'...")
        self._set_running(True)
        self.job.start()
        self._callback = every(self.drain, DRAIN_PERIOD_MS)  # a server session or a notebook kernel
        return True

    def _fill_run_identity(self) -> None:
        """A run needs a name and a seed, so that its export reproduces it."""
        import random
        import secrets

        if not self.train.save_name:
            # the random part keeps two sessions that start in the same second apart
            self.train.save_name = f"explorer_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
        if self.train.seed is None:
            self.train.seed = random.randrange(2**31)

    def _set_running(self, running: bool) -> None:
        for button in (*self.buttons.values(), self.evaluate_button):
            button.disabled = running
        self.upload.disabled = running
        self.stop_button.disabled = not running

    def stop(self) -> None:
        if self.job is not None:
            self._set_status("Stopping...")
            self.job.stop(timeout=0)  # never block the event loop: the drain reports the end

    def close(self) -> None:
        """Stop this session's job and its callback (called when the browser tab goes away)."""
        if self.job is not None:
            self.job.stop(timeout=5)
        self._stop_callback()
        self.runs.close()
        self.sweeps.close()

    def _stop_callback(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def drain(self) -> None:
        """Move what the job reported into the plots and the status line (session thread)."""
        if self.job is not None:
            self.consume(self.job.poll())

    def consume(self, events: list, started_at: float | None = None) -> None:
        """Show engine events (this session's job's, or a followed run's, which started at wall
        time ``started_at``) in the plots and the header."""
        if started_at is not None:
            self._started = time.monotonic() - (time.time() - started_at)
        if not events:
            return
        with pn.io.hold():
            self.live.ingest(events)
            for event in events:
                self._track(event)

    def _track(self, event) -> None:
        if isinstance(event, RunStarted):
            self._epochs_total = event.total if event.phase == "train" else self._epochs_total
            self._set_status(f"{event.phase}: '{event.save_name}' running...")
        elif isinstance(event, EpochFinished):
            self._epoch_status(event)
        elif isinstance(event, TrajectoryChunk) and event.phase == "simulate":
            self.progress.value = int(100 * event.progress)
        elif isinstance(event, CheckpointWritten):
            self.last_checkpoint = event.path
        elif isinstance(event, RunFinished):  # a job's own end (JobDone) follows; a followed run has no other
            self.progress.value = 100
            self._set_status(f"{event.phase} finished.")
        elif isinstance(event, JobDone):
            self._finish(event)

    def _epoch_status(self, event: EpochFinished) -> None:
        done = event.epoch + 1
        total = max(self._epochs_total, done)
        elapsed = time.monotonic() - self._started
        eta = elapsed / done * (total - done)
        m = event.metrics
        self.progress.value = int(100 * done / total)
        self._set_status(f"epoch {done}/{total} · accepted steps {m['accepted_steps']} · "
                         f"retrains {m['retrain_iterations']} · elapsed {elapsed:.0f}s · ETA {eta:.0f}s")

    def _finish(self, done: JobDone) -> None:
        self._set_running(False)
        self._stop_callback()
        elapsed = time.monotonic() - self._started
        if done.error:
            self._show_error(done.error)
            self._set_status(f"{LABELS[done.kind]} failed after {elapsed:.1f}s.")
        elif done.cancelled:
            self._set_status(f"{LABELS[done.kind]} stopped after {elapsed:.1f}s; the last checkpoint is kept.")
        else:
            self._set_status(f"{LABELS[done.kind]} finished in {elapsed:.1f}s.")
        checkpoint = done.results.get("train", {}).get("checkpoint")
        if checkpoint and done.kind in ("train", "both"):
            self.simulate.model_path = self._auto_model_path = checkpoint
        if "simulate" in done.results:
            from .compare import comparison_view

            self.sim_view.objects = [comparison_view(done.results)]
        if "evaluate" in done.results:
            from .compare import evaluation_view

            self.eval_view.objects = [evaluation_view(done.results["evaluate"])]

    # layout --------------------------------------------------------------------------------
    def settings_panel(self, form: ConfigForm, note: str) -> pn.Column:
        cards = [pn.Card(*(form.widgets[k] for k in section_keys(sec)), title=sec.title, collapsed=True,
                         sizing_mode="stretch_width") for sec in SECTIONS]
        return pn.Column(pn.pane.Markdown(note), *cards, sizing_mode="stretch_width")

    def sidebar(self) -> pn.Column:
        tabs = pn.Tabs(("Settings", self.settings_panel(self.train_form, "Shared and training keys.")),
                       ("Simulate", self.settings_panel(self.sim_form, "Keys changed here become "
                                                        "`[simulate]` overrides.")), dynamic=False)
        b = self.buttons
        return pn.Column(pn.Row(b["train"], b["simulate"]), pn.Row(b["both"], self.stop_button), self.error, tabs,
                         sizing_mode="stretch_width")

    def main(self) -> pn.Column:
        def pane(fig):
            return pn.pane.Bokeh(fig, sizing_mode="stretch_width")

        epochs = pn.GridBox(*(pane(p) for p in self.live.per_epoch()), ncols=2, sizing_mode="stretch_width")
        training = pn.Column(
            pn.Row(pane(self.live.energy_error()), pane(self.live.angular_momentum_error())),
            pn.Row(epochs, pn.Column(self.projection, pane(self.live.orbit_plot()), sizing_mode="stretch_width")),
            sizing_mode="stretch_width")
        simulation = pn.Column(pn.Row(*(pane(p) for p in self.live.simulation_plots())),
                               pane(self.live.orbit_plot("sim_orbit")),
                               pn.pane.Markdown("### Learned against analytic on the same initial conditions"),
                               self.sim_view,
                               pn.pane.Markdown("### Is the learned step worth it? The Simulate tab's `model_path` "
                                                "(empty: the checkpoint training with these settings writes) "
                                                "against the analytic and classic criteria at each `eval_eps` (and the "
                                                "time-symmetrized analytic policy with `time_symmetric`), on the "
                                                "held-out orbits `eval_e` (`nbody-runner evaluate`)"),
                               self.evaluate_button, self.eval_view, sizing_mode="stretch_width")
        export = pn.Column(pn.pane.Markdown("Export the settings as the runner's TOML and run them headless "
                                            "with the command below; or import a TOML."),
                           pn.Row(self.mode_select, self.download, self.upload), self.command_box, self.toml_preview,
                           sizing_mode="stretch_width")
        header = pn.Column(self.status_pane, self.progress, sizing_mode="stretch_width")
        runs = self.runs.panel()
        tabs = pn.Tabs(("Training", training), ("Simulation", simulation), ("Export / import", export),
                       ("Runs", runs), ("Sweeps", self.sweeps.panel()),
                       dynamic=False, sizing_mode="stretch_width")
        # the runs table lives (and refreshes) only while its tab is shown
        tabs.param.watch(lambda e: self.runs.set_shown(tabs.objects[e.new] is runs), "active")
        self.runs.set_shown(False)
        return pn.Column(header, tabs, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar(), width=360), self.main(), sizing_mode="stretch_width")
