"""Config loading in process: precedence, coercion, validation messages, `both` defaults, export."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from nbody_engine import runner
from nbody_engine.config.errors import InputError
from nbody_engine.config.export import sections_table, to_toml
from nbody_engine.config.loading import config_values, load_configs
from nbody_engine.config.schema import Config, KEYS, SECTIONS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


LAYERED = """
lr = 1e-3            # top level only
epochs = 20          # top level, [train] overrides
steps = 30           # top level, [simulate] overrides
eps = 0.2            # top level, both sections override, the CLI overrides all
num_particles = 3

[train]
epochs = 40
eps = 0.3

[simulate]
steps = 60
eps = 0.4
"""


# --- precedence ------------------------------------------------------------------------------

@pytest.mark.parametrize("cli", [{}, {"eps": 0.05}], ids=["no-cli", "cli"])
def test_precedence_train(tmp_path, cli):
    cfg = load_configs("train", write(tmp_path, LAYERED), cli)["train"]
    assert cfg.weight_decay == Config.param["weight_decay"].default == 1e-2  # default
    assert (cfg.lr, cfg.num_particles) == (1e-3, 3)  # top level
    assert cfg.epochs == 40  # [train] over top level
    assert cfg.steps == 30  # [simulate] does not leak into train
    assert cfg.eps == cli.get("eps", 0.3)  # CLI over [train]


@pytest.mark.parametrize("cli", [{}, {"eps": 0.05}], ids=["no-cli", "cli"])
def test_precedence_simulate(tmp_path, cli):
    configs = load_configs("simulate", write(tmp_path, LAYERED), cli)
    assert list(configs) == ["simulate"]
    cfg = configs["simulate"]
    assert (cfg.lr, cfg.num_particles) == (1e-3, 3)
    assert cfg.epochs == 20  # [train] does not leak into simulate
    assert cfg.steps == 60
    assert cfg.eps == cli.get("eps", 0.4)


def test_precedence_both(tmp_path):
    configs = load_configs("both", write(tmp_path, LAYERED), {"eps": 0.05, "lr": 5e-4},
                           {"train": {"ic_path": "train_ic.txt"}, "simulate": {"ic_path": "sim_ic.txt"}})
    train, sim = configs["train"], configs["simulate"]
    assert (train.epochs, train.steps) == (40, 30)
    assert (sim.epochs, sim.steps) == (20, 60)
    assert train.eps == sim.eps == 0.05  # a flag given to both applies to both phases
    assert train.lr == sim.lr == 5e-4
    assert (train.ic_path, sim.ic_path) == ("train_ic.txt", "sim_ic.txt")  # phase flags only to their phase


def test_phase_cli_reaches_only_its_phase(tmp_path):
    configs = load_configs("both", None, {}, {"train": {"ic_path": "t.txt"}})
    assert configs["train"].ic_path == "t.txt"
    assert configs["simulate"].ic_path is None


def test_precedence_through_the_parser(tmp_path):
    path = write(tmp_path, LAYERED)
    args = runner.build_parser().parse_args(
        ["both", "--config", str(path), "--eps", "0.05", "-n", "7", "--sim-ic-path", "s.npy"])
    configs = load_configs(args.mode, args.config, *runner._cli_values(args))
    assert configs["train"].epochs == configs["simulate"].epochs == 7
    assert configs["train"].eps == configs["simulate"].eps == 0.05
    assert (configs["train"].ic_path, configs["simulate"].ic_path) == (None, "s.npy")
    assert configs["simulate"].steps == 60


# --- the spec's TOML format and coercion -------------------------------------------------------

SPEC_FORMAT = """
# shared defaults
save_name = "nbody_run"
num_particles = 4
history_len = 5
feature_type = "delta_mag"

[train]
epochs = 200
n_steps = 5
steps_per_epoch = 2
energy_threshold = 2e-4
max_retrain_steps = 1e6   # lossless float -> int
wandb = true

[simulate]
steps = 500
# model_path optional: defaults to the final checkpoint from training
# movie = true
"""


def test_spec_format_loads(tmp_path):
    configs = load_configs("both", write(tmp_path, SPEC_FORMAT))
    train, sim = configs["train"], configs["simulate"]
    assert train.max_retrain_steps == 1_000_000 and type(train.max_retrain_steps) is int
    assert (train.epochs, train.n_steps, train.steps_per_epoch, train.wandb) == (200, 5, 2, True)
    assert train.energy_threshold == 2e-4
    assert (sim.steps, sim.num_particles, sim.history_len, sim.save_name) == (500, 4, 5, "nbody_run")
    assert sim.max_retrain_steps == 1000 and sim.wandb is False  # [train] keys stay in train


def test_spec_example_block_loads(tmp_path):
    """The TOML example printed in the spec itself loads in every mode."""
    spec = (REPO / "docs" / "runner_config_spec.md").read_text()
    block = re.search(r"```toml\n(.*?)```", spec, re.DOTALL).group(1)
    path = write(tmp_path, block)
    for mode in ("train", "simulate", "both"):
        configs = load_configs(mode, path)
        assert all(c.num_particles == 4 and c.save_name == "nbody_run" for c in configs.values())
    assert load_configs("train", path)["train"].epochs == 200


@pytest.mark.parametrize(("line", "key"), [
    ("epochs = 1.5", "epochs"),
    ("epochs = true", "epochs"),  # a bool is not an int
    ('lr = "fast"', "lr"),  # a string is not a number
    ('num_particles = "3"', "num_particles"),
    ("dim = 2.5", "dim"),
    ("hidden_dims = [32, 1.5]", "hidden_dims"),
    ('external_field_position = [1, 2]', "external_field_position"),
    ('feature_type = "fancy"', "feature_type"),
    ('debug = 1', "debug"),
])
@pytest.mark.parametrize("section", ["", "[train]\n", "[simulate]\n"], ids=["top", "train", "simulate"])
def test_wrong_type_names_the_key(tmp_path, line, key, section):
    path = write(tmp_path, section + line + "\n")
    with pytest.raises(InputError, match=f"'{key}'"):
        load_configs("both", path)


# --- unknown keys and sections -----------------------------------------------------------------

def test_unknown_key_names_file_section_and_suggestion(tmp_path):
    path = write(tmp_path, "[train]\nenergy_treshold = 1e-4\n")
    with pytest.raises(InputError) as info:
        load_configs("train", path)
    message = str(info.value)
    assert message.startswith("unknown key 'energy_treshold' in [train] of ")
    assert str(path) in message
    assert message.endswith("; did you mean 'energy_threshold'?")


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "num_particle = 3\n")
    with pytest.raises(InputError, match=r"unknown key 'num_particle'.*did you mean 'num_particles'\?") as info:
        load_configs("simulate", path)
    assert str(path) in str(info.value)


def test_unknown_key_in_simulate_section_even_in_train_mode(tmp_path):
    """A typo is an error wherever it is, not only in the section the mode reads."""
    path = write(tmp_path, "[simulate]\nstepz = 3\n")
    with pytest.raises(InputError, match=r"unknown key 'stepz' in \[simulate\].*did you mean 'steps'\?"):
        load_configs("train", path)


def test_unknown_section(tmp_path):
    path = write(tmp_path, "[trian]\nepochs = 3\n")
    with pytest.raises(InputError, match=r"\[trian\]") as info:
        load_configs("train", path)
    assert "'train'" in str(info.value)


# --- bounds and cross-key rules ----------------------------------------------------------------

@pytest.mark.parametrize(("line", "key"), [
    ("lr = -1", "lr"),
    ("dim = 4", "dim"),
    ("e_max = 1.0", "e_max"),
    ("epochs = 0", "epochs"),
    ("num_particles = 1", "num_particles"),
    ("momentum = 1.0", "momentum"),
    ("seed = -1", "seed"),
    ("movie_fps = 0", "movie_fps"),
])
def test_out_of_bounds_names_the_key(tmp_path, line, key):
    with pytest.raises(InputError, match=f"'{key}'"):
        load_configs("simulate", write(tmp_path, line + "\n"))


def test_out_of_bounds_from_cli():
    with pytest.raises(InputError, match="'dim'"):
        runner._cli_values(runner.build_parser().parse_args(["simulate", "--dim", "5"]))


@pytest.mark.parametrize(("text", "low", "high"), [
    ("E_lower = 1e-3\nE_upper = 1e-4\n", "E_lower", "E_upper"),
    ("E_lower = 1e-3\n[train]\nE_upper = 1e-4\n", "E_lower", "E_upper"),  # across layers
    ("L_lower = 0.5\nL_upper = 0.1\n", "L_lower", "L_upper"),
    ("e_min = 0.9\ne_max = 0.7\n", "e_min", "e_max"),
    ("a_min = 2.0\na_max = 1.0\n", "a_min", "a_max"),
])
def test_lower_above_upper(tmp_path, text, low, high):
    with pytest.raises(InputError, match=f"'{low}'.*'{high}'"):
        load_configs("train", write(tmp_path, text))


def test_lower_above_upper_from_cli_over_toml(tmp_path):
    path = write(tmp_path, "E_upper = 1e-3\n")
    assert load_configs("train", path, {"E_lower": 1e-4})["train"].E_lower == 1e-4
    with pytest.raises(InputError, match="'E_lower'"):
        load_configs("train", path, {"E_lower": 1e-2})


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "a\\b", "~user", ""])
def test_save_name_is_a_plain_name(tmp_path, name):
    with pytest.raises(InputError, match="'save_name'"):
        load_configs("simulate", None, {"save_name": name})
    with pytest.raises(InputError, match="'save_name'"):
        load_configs("simulate", write(tmp_path, f"save_name = {json.dumps(name)}\n"))


def test_plain_save_name_is_accepted():
    assert load_configs("simulate", None, {"save_name": "run-1.v2"})["simulate"].save_name == "run-1.v2"


def test_external_field_needs_mass_and_position():
    with pytest.raises(InputError, match="external_field_position"):
        load_configs("simulate", None, {"external_field_mass": 1.0})
    cfg = load_configs("simulate", None, {"external_field_mass": 1.0, "external_field_position": [1, 0, 0]})
    assert cfg["simulate"].external_field_position == [1, 0, 0]


# --- `both` defaults --------------------------------------------------------------------------

def test_both_defaults_model_path_and_ml(tmp_path):
    path = write(tmp_path, 'save_name = "exp"\n[train]\nepochs = 3\n')
    sim = load_configs("both", path)["simulate"]
    assert Path(sim.model_path) == Path("data/exp/model/model_epoch_0002.pt")
    assert sim.integrator_mode == "ml"


def test_both_defaults_follow_cli_epochs_and_history(tmp_path):
    sim = load_configs("both", None, {"save_name": "h", "epochs": 1000, "history_len": 4})["simulate"]
    assert Path(sim.model_path) == Path("data/h/model/model_epoch_0999.pt")
    assert sim.integrator_mode == "history"


def test_both_defaults_from_spec_example(tmp_path):
    sim = load_configs("both", write(tmp_path, SPEC_FORMAT))["simulate"]
    assert Path(sim.model_path) == Path("data/nbody_run/model/model_epoch_0199.pt")
    assert sim.integrator_mode == "history"  # history_len = 5


def test_both_defaults_without_save_name_use_the_generated_name():
    configs = load_configs("both", None, {"epochs": 2})
    name = configs["train"].save_name
    assert name and configs["simulate"].save_name == name
    assert Path(configs["simulate"].model_path) == Path("data") / name / "model" / "model_epoch_0001.pt"


@pytest.mark.parametrize("text", [
    '[simulate]\nmodel_path = "elsewhere.pt"\nintegrator_mode = "analytic"\n',
    'model_path = "elsewhere.pt"\nintegrator_mode = "analytic"\n',
])
def test_both_explicit_values_win(tmp_path, text):
    sim = load_configs("both", write(tmp_path, 'save_name = "e"\n' + text))["simulate"]
    assert (sim.model_path, sim.integrator_mode) == ("elsewhere.pt", "analytic")


def test_both_explicit_cli_values_win():
    sim = load_configs("both", None, {"model_path": "m.pt", "integrator_mode": "analytic"})["simulate"]
    assert (sim.model_path, sim.integrator_mode) == ("m.pt", "analytic")


def test_train_and_simulate_modes_keep_plain_defaults():
    sim = load_configs("simulate", None, {"save_name": "x"})["simulate"]
    assert (sim.model_path, sim.integrator_mode) == (None, "analytic")


# --- export -----------------------------------------------------------------------------------

DIFFERING = """
save_name = "rt"
num_particles = 3
dim = 3
seed = 11
hidden_dims = [32, 16]
external_field_mass = 0.5
external_field_position = [2, 0, -1.5]
E_lower = 1e-7
lr = 3e-4

[train]
epochs = 12
history_len = 2
ic_path = "train_ic.npy"
stop_at_period = true
max_retrain_steps = 1e6

[simulate]
steps = 77
dt = 0.001
ic_path = "sim_ic.txt"
duration = 2.5
"""


def test_to_toml_round_trip_both(tmp_path):
    configs = load_configs("both", write(tmp_path, DIFFERING))
    assert config_values(configs["train"]) != config_values(configs["simulate"])
    text = to_toml(configs)
    again = load_configs("both", write(tmp_path, text, "exported.toml"))
    for phase in ("train", "simulate"):
        assert config_values(again[phase]) == config_values(configs[phase]), phase
        for key in KEYS:
            assert type(getattr(again[phase], key)) is type(getattr(configs[phase], key)), (phase, key)

    doc = tomllib.loads(text)
    for key in ("save_name", "num_particles", "dim", "seed", "hidden_dims", "external_field_position", "lr"):
        assert key in doc and key not in doc["train"] and key not in doc["simulate"], key
    assert doc["train"]["epochs"] == 12 and doc["train"]["ic_path"] == "train_ic.npy"
    assert doc["simulate"]["steps"] == 77 and doc["simulate"]["ic_path"] == "sim_ic.txt"
    assert doc["simulate"]["model_path"] == str(Path("data/rt/model/model_epoch_0011.pt"))
    assert doc["simulate"]["integrator_mode"] == "history" and doc["train"]["integrator_mode"] == "analytic"
    for key in ("epochs", "steps", "ic_path", "model_path", "integrator_mode", "duration"):
        assert key not in doc, key


@pytest.mark.parametrize("mode", ["train", "simulate"])
def test_to_toml_round_trip_single_phase(tmp_path, mode):
    configs = load_configs(mode, write(tmp_path, DIFFERING))
    again = load_configs(mode, write(tmp_path, to_toml(configs), "exported.toml"))
    assert config_values(again[mode]) == config_values(configs[mode])


def test_to_toml_of_defaults_round_trips(tmp_path):
    configs = load_configs("simulate", None, {"save_name": "d"})
    again = load_configs("simulate", write(tmp_path, to_toml(configs), "d.toml"))
    assert config_values(again["simulate"]) == config_values(configs["simulate"])


# --- the README's reference table ---------------------------------------------------------------

def test_sections_table_lists_every_key_and_section():
    table = sections_table()
    for key in KEYS:
        assert re.search(rf"^\| `{re.escape(key)}` \|", table, re.MULTILINE), key
    for section in SECTIONS:
        assert f"### {section.title}" in table


def test_readme_reference_is_the_generated_table():
    assert README.exists(), "README.md is missing; it must hold the generated config reference"
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, "README.md needs the config-reference markers once"
    embedded = text.split(START, 1)[1].split(END, 1)[0]
    assert embedded.strip() == sections_table().strip(), (
        "README.md's config reference is stale: paste nbody_engine.config.export.sections_table() between the markers")


def test_evaluate_defaults_model_path_to_the_named_runs_last_checkpoint(tmp_path):
    path = write(tmp_path, 'save_name = "exp"\n[train]\nepochs = 3\n')
    assert Path(load_configs("evaluate", path)["simulate"].model_path) == Path("data/exp/model/model_epoch_0002.pt")
    assert load_configs("evaluate", path, {"model_path": "mine.pt"})["simulate"].model_path == "mine.pt"
    assert load_configs("evaluate", path, run_defaults=False)["simulate"].model_path is None
    assert load_configs("evaluate", None, {})["simulate"].model_path is None  # no run named: nothing to guess


# --- the per-type table: finite numbers, bounded list items, sizes, paths -----------------

@pytest.mark.parametrize("key, value, message", [
    ("dt", float("nan"), "'dt' must be a finite number"),
    ("lr", float("inf"), "'lr' must be a finite number"),
    ("energy_threshold", float("inf"), "'energy_threshold' must be a finite number"),
    ("duration", float("inf"), "'duration' must be a finite number"),
    ("epochs", float("inf"), "'epochs' must be a finite number"),
    ("hidden_dims", [0], "'hidden_dims' items must be between 1 and 16384, not 0"),
    ("hidden_dims", [64, -3], "'hidden_dims' items must be between 1 and 16384, not -3"),
    ("hidden_dims", [10**9], "'hidden_dims' items must be between 1 and 16384"),
    ("external_field_position", [0.0, float("nan"), 0.0], "'external_field_position' must be a finite number"),
    ("eval_eps", [0.1, 0.0], "'eval_eps' items must be between"),
    ("epochs", 10**12, "'epochs' must be at most 10000000"),
    ("steps", 10**30, "'steps' must be at most"),
    ("history_len", 10**9, "'history_len' must be at most 1000"),
    ("num_particles", 10000, "'num_particles' must be at most 4096"),
    ("softening", 1e308, "'softening' must be at most 1e+150 in magnitude"),
    ("external_field_position", [0.0, -1e200, 0.0], "'external_field_position' must be at most 1e+150"),
])
def test_refused_values_name_the_key(key, value, message):
    with pytest.raises(InputError) as err:
        load_configs("simulate", {key: value}, source="run.toml")
    assert message in str(err.value) and str(err.value).startswith("run.toml")


def test_every_key_has_a_kind_and_a_value_range():
    from nbody_engine.config.export import value_range
    from nbody_engine.config.keytypes import key_type
    from nbody_engine.config.schema import Config, KEYS

    for key in KEYS:
        assert key_type(Config.param[key]).name in {"boolean", "integer", "number", "choice", "list", "paths",
                                                            "text"}
        assert value_range(Config.param[key])


def test_paths_outside_the_allowed_roots_are_refused(tmp_path):
    from nbody_engine.config.loading import check_paths_within

    inside = load_configs("simulate", {"ic_path": str(tmp_path / "a.npy")})["simulate"]
    check_paths_within(inside, [tmp_path], "imported TOML", "allow more")
    for outside in ("/etc/passwd", str(tmp_path / ".." / "x.npy")):
        cfg = load_configs("simulate", {"model_path": outside})["simulate"]
        with pytest.raises(InputError, match="'model_path' .* lies outside .*; allow more"):
            check_paths_within(cfg, [tmp_path], "imported TOML", "allow more")
    several = load_configs("evaluate", {"eval_model_paths": [str(tmp_path / "a.pt"), "/etc/passwd"]})["simulate"]
    with pytest.raises(InputError, match="'eval_model_paths' = '/etc/passwd' lies outside"):
        check_paths_within(several, [tmp_path], "imported TOML", "allow more")


def test_a_list_of_paths_is_read_from_toml_and_flags_and_refused_when_not_text():
    cfg = load_configs("evaluate", {"eval_model_paths": ["a.pt", "b c.pt"]})["simulate"]
    assert cfg.eval_model_paths == ["a.pt", "b c.pt"]
    assert load_configs("evaluate")["simulate"].eval_model_paths == []
    with pytest.raises(InputError, match="'eval_model_paths' must be a list of paths, not"):
        load_configs("evaluate", {"eval_model_paths": ["a.pt", 3]})


def test_number_keys_hold_floats():
    """An integer in TOML for a number key is that float (2**40 squared stays a float)."""
    cfg = load_configs("simulate", {"softening": 2**40, "Nperiod": 3})["simulate"]
    assert type(cfg.softening) is float and type(cfg.Nperiod) is float
