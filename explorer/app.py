"""The Explorer: edit every configuration key, run jobs in the background, watch them live,
export the TOML and the headless command that reproduce the run.

Two Config objects hold the settings: ``train`` (shared keys and training) and ``simulate``.
The simulate settings follow the train settings except for the keys changed in the
"Simulate" tab, which become that phase's ``[simulate]`` overrides in the exported TOML.
Every job runs from the exported TOML through the CLI's own loader, so the dashboard and
``nbody-runner`` cannot disagree.
"""

from __future__ import annotations

import functools
import io
import time

import panel as pn
import param

from nbody_engine.config.errors import InputError
from nbody_engine.config.export import to_toml
from nbody_engine.config.loading import check_consistency, config_values, load_configs, parse_toml
from nbody_engine.config.schema import Config, KEYS

from .fields import SettingsPanel
from .files import check_confined
from .background import BackgroundJob
from .jobs import Job, JobDone, fresh_run_name, run_of_checkpoint, warm_up
from .live import LivePlots, PROJECTIONS
from .paint_gate import PaintGate
from .page import export_tab, header, lazy, load_notebook_extension, simulation_tab, training_tab
from .progress import RunProgress
from .runs_view import RunsView
from .sweeps_view import SweepsView

MODES = {"train": "Train", "simulate": "Simulate", "both": "Train + simulate"}
LABELS = {**MODES, "evaluate": "Evaluate"}
DRAIN_PERIOD_MS = 200
# The dashboard opens on a run that shows something within a second and ends within seconds
# (configs/quick.toml's training settings with 30 replay steps instead of 50: every state passes
# the band from about epoch 5 on) and simulates the family it trains on, num_orbits
# Kepler orbits with e in [e_min, e_max], rather than one random two-body system, which may be
# all but radial (the analytic step then loses a quarter of the energy in 10 periods); every
# other key starts at the schema default (the CLI's defaults are the spec's).
QUICK_START = {"epochs": 20, "steps_per_epoch": 4, "replay_steps": 30, "lr": 1e-3, "weight_decay": 0.0}
SIMULATE_START = {"multi_orbit_sim": True}


def _default_config(**start) -> Config:
    return Config(**QUICK_START, **start)


class Explorer(pn.viewable.Viewer):
    """The whole dashboard; ``Explorer()`` in a notebook, ``nbody-explorer`` on a server.

    Its jobs run through ``runner`` (:class:`~explorer.background.BackgroundJob`), whose
    ``status``, ``progress`` and ``error`` the header's status line, progress bar and the alert
    above the settings show; what a run reports comes in through :meth:`consume` (and
    :meth:`track`), which take the engine's events (from this session's job, or from a run
    followed on disk) on the session's thread."""

    train = param.ClassSelector(class_=Config, doc="Shared and training settings")
    simulate = param.ClassSelector(class_=Config, doc="Simulation settings")
    export_mode = param.Selector(default="both", objects=list(MODES))

    def __init__(self, **params) -> None:
        params.setdefault("train", _default_config())
        params.setdefault("simulate", _default_config(**SIMULATE_START))
        super().__init__(**params)
        self._mirroring = self._loading = False
        self._auto_model_path: str | None = None  # the simulate model_path a finished training filled in
        self.overrides: set[str] = {k for k in KEYS if getattr(self.simulate, k) != getattr(self.train, k)}
        self.runner = BackgroundJob(self.drain, DRAIN_PERIOD_MS, status="Ready.")
        self.runner.param.watch(self._pop_up, "error", onlychanged=False)
        self.run_folder: str | None = None  # the folder of the last job's run
        self.live = LivePlots()
        self.paint_gate = PaintGate()
        self._waiting_header: list = [None, None]  # status and percent not yet sent (consume)
        self.run_progress = RunProgress()
        self._runs: RunsView | None = None
        self._sweeps: SweepsView | None = None
        self._build_widgets()
        self.train.param.watch(self._mirror_to_simulate, list(KEYS))
        self.simulate.param.watch(self._note_override, list(KEYS))
        self.simulate.param.watch(self._simulate_the_systems_set, ["num_particles", "ic_path", "use_train_ic"])
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: self.close())
            pn.state.onload(warm_up)
        else:  # Jupyter: the notebook shows the page at once
            warm_up()

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
        """The headless command of the exported TOML: it writes a run folder that none has yet
        (never over a run of this page), as the page's own jobs do."""
        file = self.train.save_name or "run"
        return f"nbody-runner {mode or self.export_mode} --config {file}.toml --save-name {fresh_run_name(file)}"

    def load_toml(self, text: str, source: str = "uploaded TOML") -> None:
        """Apply a TOML document through the CLI's loader; raises InputError on bad input."""
        configs = load_configs("both", parse_toml(text, source), run_defaults=False, source=source)
        for cfg in configs.values():
            check_confined(cfg, source)
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
        self.error = self.runner.error_alert()
        self.train_settings = SettingsPanel(self.train, "Settings", "Shared and training keys.", self._notify,
                                            baseline=_default_config())
        self.buttons = {mode: pn.widgets.Button(label=label, color="light") for mode, label in MODES.items()}
        for mode, button in self.buttons.items():
            button.on_click(lambda _e, mode=mode: self.start(mode))
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", disabled=True)
        self.stop_button.on_click(lambda _e: self.stop())
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
        self.mode_select.link(self, value="export_mode", bidirectional=True)  # a job's mode shows here too
        self.param.watch(lambda _e: self._refresh_export(), "export_mode")
        self.sim_view = pn.Column(sizing_mode="stretch_width")
        self.eval_view = pn.Column(sizing_mode="stretch_width")
        self.evaluate_button = pn.widgets.Button(label="Evaluate: learned vs the baselines (eps sweep)",
                                                 color="primary")
        self.evaluate_button.on_click(lambda _e: self.start("evaluate"))
        self._refresh_export()

    @functools.cached_property
    def sim_settings(self) -> SettingsPanel:
        """The sidebar's Simulate tab (built the first time it is shown)."""
        return SettingsPanel(self.simulate, "Simulate", "Keys changed here become `[simulate]` overrides of the "
                             "shared settings.", self._notify, baseline=self.train)

    @property
    def runs(self) -> RunsView:
        """The Runs tab's view (built the first time it is needed)."""
        if self._runs is None:
            self._runs = RunsView(self.live, feed=self.consume)
        return self._runs

    @property
    def sweeps(self) -> SweepsView:
        """The Sweeps tab's view (built the first time it is needed)."""
        if self._sweeps is None:
            self._sweeps = SweepsView(self.toml_text)
        return self._sweeps

    def _notify(self, message: str) -> None:
        """Pop ``message`` up in the page (a server's page; Jupyter shows only the alert)."""
        if pn.state.notifications is not None:
            pn.state.notifications.error(message, duration=8_000)

    @property
    def job(self) -> Job | None:
        """This session's last job (None before the first)."""
        return self.runner.job

    @property
    def status(self) -> str:
        return self.runner.status

    @property
    def progress(self) -> int:
        return self.runner.progress

    def _show_error(self, message: str) -> None:
        """A job's or an import's error: above the settings, and popped up (``_pop_up``)."""
        self.runner.show_error(message)

    def _pop_up(self, event) -> None:
        if event.new:
            self._notify(event.new)

    def _set_status(self, text: str) -> None:
        self.runner.show(status=text)

    def _set_progress(self, percent: float) -> None:
        self.runner.show(progress=percent)

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
            self._set_status(f"Import of {self.upload.filename} refused; no setting was changed.")
            return
        self.runner.show_error(None)
        self._set_status(f"Loaded {self.upload.filename}.")

    # jobs ----------------------------------------------------------------------------------
    def start(self, mode: str) -> bool:
        """Start a job of ``mode`` in the background; False (with the reason shown) if not.
        Every train, simulate or both job writes a run folder of its own (:meth:`run_name`)."""
        try:
            self._fill_seed()
            for cfg in self.configs().values():
                check_consistency(cfg, mode)
                check_confined(cfg, "the dashboard's settings")
        except InputError as err:
            self._show_error(str(err))
            return False
        if self.runner.start(lambda: self._job_of(mode)) is None:
            return False
        name = self.run_folder
        if mode in MODES:
            self.export_mode = mode
        self.run_progress.start(self.train.epochs if mode != "simulate" else 0)
        self._set_progress(0)
        self._set_status(f"{LABELS[mode]}: starting '{name or self.train.save_name}'...")
        self._set_running(True)
        self._refresh_export()  # the command names a folder this run does not take
        return True

    def _job_of(self, mode: str) -> Job:
        """The job of ``mode`` (called with a job slot held): the plots emptied for it, and its
        run folder in ``run_folder``."""
        if mode == "both" and self.simulate.model_path is not None and \
                self.simulate.model_path == self._auto_model_path:
            # 'Train + simulate' simulates the checkpoint this training writes, not the one an
            # earlier 'Train' left in the Simulate settings.
            self.simulate.model_path = self.train.model_path
        self.live.reset({"E": (self.train.E_lower, self.train.E_upper),
                         "L": (self.train.L_lower, self.train.L_upper), "threshold": self.train.energy_threshold})
        self.run_folder = self.run_name(mode)
        return Job(mode, self.toml_text(), save_name=self.run_folder)

    def run_name(self, mode: str) -> str | None:
        """The run folder a job of ``mode`` writes: a new one for train, simulate and both (the
        settings' ``save_name`` if no folder has it yet, else a numbered variant); Evaluate writes
        into the run of the checkpoint it evaluates (None: the settings' ``save_name``)."""
        if mode == "evaluate":
            return run_of_checkpoint(self.simulate.model_path)
        return fresh_run_name(self.train.save_name)

    def _fill_seed(self) -> None:
        """A run needs a seed, so that its export reproduces it."""
        import random

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
            self.runner.stop()  # never blocks the event loop: the drain reports the end

    def close(self) -> None:
        """Stop this session's job and its callback (called when the server drops the session,
        a few seconds after its tab closed: explorer/serve.py); never blocks the server."""
        self.runner.close()  # the job's thread ends at its next step and gives its slot back
        for view in (self._runs, self._sweeps):
            if view is not None:
                view.close()

    def drain(self) -> None:
        """Move what the job reported into the plots and the status line (session thread)."""
        if self.job is not None:
            self.consume(self.job.poll())

    def consume(self, events: list, started_at: float | None = None) -> None:
        """Show engine events in the plots (``self.live``) and the header: this session's job's,
        or a followed run's, which started at wall time ``started_at``. What they change is sent
        to the page once it has drawn the last batch (:class:`~explorer.paint_gate.PaintGate`):
        a page busy drawing still answers clicks. Once Stop is pressed (no more plot rows come),
        and at a job's end, it is sent at once, after everything still waiting."""
        self.live.collect(events)
        done = None
        for event in events:
            if isinstance(event, JobDone):
                done = event
            else:
                self._waiting_header = [new if new is not None else old
                                        for new, old in zip(self._header_of(event), self._waiting_header)]
        if started_at is not None:  # after its RunStarted, which starts the clock at the first sight
            self.run_progress.started = time.monotonic() - (time.time() - started_at)
        if done is not None or self.paint_gate.open() or (self.job is not None and self.job.stopping):
            self._send()
        if done is not None:
            self._finish(done)

    def _send(self) -> None:
        """Send the waiting plot rows and header in one message the page answers when drawn."""
        status, percent = self._waiting_header
        if not self.live.waiting and status is None and percent is None:
            return
        self._waiting_header = [None, None]
        with pn.io.hold():
            self.live.flush()
            if percent is not None:
                self._set_progress(percent)
            if status is not None:
                self._set_status(status)
            self.paint_gate.mark_sent()

    def track(self, event) -> None:
        """Show an engine event (or a job's JobDone) in the header at once: status, progress, ETA
        and the last checkpoint (:class:`~explorer.progress.RunProgress`). :meth:`consume` takes
        a job's events, for the plots too, and sends them when the page is ready."""
        if isinstance(event, JobDone):
            self._finish(event)
            return
        status, percent = self._header_of(event)
        if percent is not None:
            self._set_progress(percent)
        if status is not None:
            self._set_status(status)

    def _header_of(self, event) -> tuple[str | None, float | None]:
        return self.run_progress.update(event, followed=self.job is None or not self.job.running)

    @property
    def last_checkpoint(self) -> str | None:
        return self.run_progress.last_checkpoint

    def _finish(self, done: JobDone) -> None:
        self._set_running(False)
        self.runner.ended()
        elapsed = self.run_progress.elapsed()
        if done.error:
            self._show_error(done.error)
            self._set_status(f"{LABELS[done.kind]} failed after {elapsed:.1f}s.")
        elif done.cancelled:
            self._set_status(f"{LABELS[done.kind]} stopped after {elapsed:.1f}s{self.run_progress.kept(done.kind)}.")
        else:
            where = f": data/{self.run_folder}" if self.run_folder and done.kind in MODES else ""
            self._set_status(f"{LABELS[done.kind]} finished in {elapsed:.1f}s{where}.")
        checkpoint = done.results.get("train", {}).get("checkpoint")
        if checkpoint and done.kind in ("train", "both"):
            self.simulate.model_path = self._auto_model_path = checkpoint
        if "simulate" in done.results:
            from .compare import comparison_view

            self.sim_view.objects = [comparison_view(done.results)]
        if "evaluate" in done.results:
            from .evaluate_view import evaluation_view

            self.eval_view.objects = [evaluation_view(done.results["evaluate"])]

    # layout --------------------------------------------------------------------------------
    def header(self) -> pn.Row:
        return header(self)

    def sidebar(self) -> pn.Column:
        tabs = pn.Tabs(("Settings", self.train_settings), ("Simulate", lazy(lambda: self.sim_settings, "Simulate")),
                       dynamic=True, sizing_mode="stretch_width")
        return pn.Column(self.error, tabs, sizing_mode="stretch_width")

    def main(self) -> pn.Tabs:
        """The tabs; each is built the first time it is shown."""
        runs = lazy(lambda: self.runs.panel(), "Runs")
        tabs = pn.Tabs(("Training", training_tab(self)),
                       ("Simulation", lazy(lambda: simulation_tab(self), "Simulation")),
                       ("Export / import", export_tab(self)), ("Runs", runs),
                       ("Sweeps", lazy(lambda: self.sweeps.panel(), "Sweeps")),
                       dynamic=True, sizing_mode="stretch_width")
        # the runs table lives (and refreshes) only while its tab is shown
        tabs.param.watch(lambda e: self._runs and self._runs.set_shown(tabs.objects[e.new] is runs), "active")
        return tabs

    def _repr_mimebundle_(self, include=None, exclude=None):
        """In a notebook, ``Explorer()`` alone shows the dashboard: it loads what it needs into the
        kernel itself (Panel's extension and Tabulator, inline: nothing from the internet)."""
        load_notebook_extension()
        return super()._repr_mimebundle_(include, exclude)

    def __panel__(self):
        return pn.Column(self.header(), pn.Row(pn.Column(self.sidebar(), width=360), self.main(),
                                               sizing_mode="stretch_width"), sizing_mode="stretch_width")
