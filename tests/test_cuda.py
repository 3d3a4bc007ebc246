"""The engine on a CUDA device (``--device cuda``), through the real CLI: simulations follow the
same runs on the CPU to rounding, and training on the GPU writes checkpoints that a CPU-only
machine reads and simulates. Skipped, with the reason, where torch sees no CUDA device (the CI
machine has none): they run wherever a GPU is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli_ok
from nbody_engine.runs.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible to torch: these tests need an NVIDIA GPU")


def runner(cwd: Path, *args: str) -> str:
    """Run the CLI, require success, return what it printed (a simulation prints its summary)."""
    return cli_ok(cwd, *args, timeout=600).stdout


def same_run(cuda: dict, cpu: dict) -> None:
    assert cuda["steps"] == cpu["steps"]
    for key in ("time_final", "energy_initial", "energy_final"):
        np.testing.assert_allclose(cuda[key], cpu[key], rtol=1e-9, err_msg=key)
    np.testing.assert_allclose(cuda["max_rel_energy_error"], cpu["max_rel_energy_error"], rtol=1e-4)


@pytest.mark.parametrize("case", [
    ("--num-particles", "2"),                                             # a binary's relative orbit
    ("--num-particles", "2", "--multi-orbit-sim", "--num-orbits", "16"),  # a batch of binaries
    ("--num-particles", "4"),                                             # the pair step
    ("--num-particles", "3", "--multi-orbit-sim", "--num-orbits", "64"),  # a batch of three-body systems
    ("--num-particles", "4", "--compile"),                                # compiled: the general step (the CPU: aot)
    ("--num-particles", "2", "--compile"),                                # compiled on the device
], ids=["binary", "binaries", "four-bodies", "three-body-batch", "four-bodies-compiled", "compiled"])
def test_a_simulation_on_cuda_follows_the_cpu_one(tmp_path, case):
    common = ("simulate", "--steps", "400", "--Nperiod", "0", "--seed", "0", *case)
    cuda = json.loads(runner(tmp_path, *common, "--device", "cuda", "-s", "on_cuda"))
    cpu = json.loads(runner(tmp_path, *common, "--device", "cpu", "-s", "on_cpu"))
    same_run(cuda, cpu)


def test_a_model_trained_on_cuda_simulates_on_a_cpu(tmp_path):
    runner(tmp_path, "train", "--config", str(REPO / "configs" / "quick.toml"), "--epochs", "3",
           "--device", "cuda", "-s", "gpu")
    checkpoint = tmp_path / "data" / "gpu" / "model" / "model_epoch_0002.pt"
    ckpt = load_checkpoint(checkpoint)
    assert all(t.device.type == "cpu" for t in ckpt.model_state.values())
    summary = json.loads(runner(tmp_path, "simulate", "--config", str(REPO / "configs" / "quick.toml"), "--model-path",
                     str(checkpoint), "--integrator-mode", "ml", "--device", "cpu", "-s", "gpu_on_cpu"))
    assert np.isfinite(summary["max_rel_energy_error"]).all() and np.isfinite(summary["energy_final"]).all()


def test_ml_ttl_trains_on_cuda_and_simulates_as_on_the_cpu(tmp_path):
    """The learned time transformation: trained on the GPU, its TTL run on the GPU follows the CPU's."""
    runner(tmp_path, "train", "--integrator-mode", "ml_ttl", "--objective", "rollout", "--train-family", "triples",
           "--num-orbits", "4", "--e-min", "0.3", "--e-max", "0.7", "--epochs", "2", "--steps-per-epoch", "1",
           "--rollout-periods", "1", "--rollout-eta", "0.5", "1.0", "--seed", "0", "--device", "cuda", "-s", "ttl")
    common = ("simulate", "--integrator-mode", "ml_ttl", "--model-path", "data/ttl/model/model_epoch_0001.pt",
              "--use-train-ic", "--duration", "20", "--eps", "0.3")
    cuda = json.loads(runner(tmp_path, *common, "--device", "cuda", "-s", "on_cuda"))
    cpu = json.loads(runner(tmp_path, *common, "--device", "cpu", "-s", "on_cpu"))
    same_run(cuda, cpu)
