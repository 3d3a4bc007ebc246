"""Movies and report PNGs through the real CLI (a subprocess in a scratch directory), and the
frame selection on its own.

Every MP4 is decoded in full with the ffmpeg that imageio-ffmpeg ships: its frame count, frame
size and duration must be what the run's trajectory, ``movie_max_frames``, ``movie_dpi`` and
``movie_fps`` say.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import matplotlib.image
import numpy as np
import pytest

from nbody_engine.reporting.movie import frame_indices, frame_size, write_movie

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MOVIE_TOML = """
num_particles = 3
steps = 30
seed = 7
movie_dpi = 40
movie = true
movie_dir = "custom/movies"
movie_max_frames = 0
"""

# name: (argv after 'python -m nbody_engine.runner', movie path relative to the scratch directory)
RUNS = {
    "m3": (["simulate", "--num-particles", "3", "--steps", "200", "--seed", "5", "--movie", "--movie-max-frames", "40",
            "-s", "m3"], "data/movie/nbody_movie_m3_analytic.mp4"),
    "m3_fps10": (["simulate", "--num-particles", "3", "--steps", "200", "--seed", "5", "--movie", "--movie-max-frames",
                  "12", "--movie-fps", "10", "--movie-dpi", "40", "-s", "m3_fps10"],
                 "data/movie/nbody_movie_m3_fps10_analytic.mp4"),
    "m4": (["simulate", "--num-particles", "4", "--dim", "3", "--steps", "200", "--seed", "6", "--movie",
            "--movie-max-frames", "40", "--movie-dpi", "60", "-s", "m4"], "data/movie/nbody_movie_m4_analytic.mp4"),
    "all": (["simulate", "--config", "all.toml", "-s", "all"], "custom/movies/nbody_movie_all_analytic.mp4"),
    "tr": (["train", "--epochs", "2", "--num-orbits", "2", "--steps-per-epoch", "3", "--replay-steps", "5",
            "--hidden-dims", "16", "16", "--lr", "1e-3", "--seed", "1", "--movie", "--movie-max-frames", "5",
            "-s", "tr"], "data/movie/nbody_movie_tr_train.mp4"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of RUNS, started together in one scratch directory: {name: (cwd, returncode, stderr)}."""
    cwd = tmp_path_factory.mktemp("movies")
    (cwd / "all.toml").write_text(MOVIE_TOML)
    procs = {name: subprocess.Popen([sys.executable, "-m", "nbody_engine.runner", *argv], cwd=cwd, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for name, (argv, _) in RUNS.items()}
    results = {}
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=300)
            results[name] = (cwd, proc.returncode, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return results


def finished(runs, name: str) -> tuple[Path, Path]:
    """The scratch directory and the movie of run ``name``, which must have succeeded."""
    cwd, code, err = runs[name]
    assert code == 0, err
    return cwd, cwd / RUNS[name][1]


def decode(path: Path) -> dict:
    """Decode the whole MP4; its frame count, duration, size, fps and codec."""
    assert path.is_file(), path
    assert path.read_bytes()[4:8] == b"ftyp", "not an MP4 container"
    nframes, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    decoded = 0
    for frame in reader:
        assert len(frame) == width * height * 3
        decoded += 1
    return {"frames": nframes, "decoded": decoded, "secs": secs, "size": tuple(meta["size"]), "fps": meta["fps"],
            "codec": meta["codec"]}


def check_movie(path: Path, *, frames: int, max_frames: int, fps: int, dpi: int) -> dict:
    info = decode(path)
    assert info["codec"] == "h264"
    assert info["frames"] == info["decoded"] == frames
    assert 0 < info["frames"] and (max_frames <= 0 or info["frames"] <= max_frames)
    assert info["size"] == frame_size(dpi)
    assert info["fps"] == pytest.approx(fps)
    assert info["secs"] == pytest.approx(frames / fps, abs=1.5 / fps)
    return info


def check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0, "a blank image"


def expected_frames(trajectory: Path, max_frames: int) -> int:
    dt = np.load(trajectory)["dt"][:, 0]
    return len(frame_indices(dt, max_frames))


# the CLI ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_three_body_2d_movie_and_report(runs):
    cwd, movie = finished(runs, "m3")
    sim = cwd / "data" / "m3" / "sim" / "analytic"
    frames = expected_frames(sim / "trajectory.npz", 40)
    assert 20 < frames <= 40
    check_movie(movie, frames=frames, max_frames=40, fps=30, dpi=120)
    check_png(sim / "report.png")


@pytest.mark.slow
def test_four_body_3d_movie_and_report(runs):
    cwd, movie = finished(runs, "m4")
    sim = cwd / "data" / "m4" / "sim" / "analytic"
    assert np.load(sim / "trajectory.npz")["position"].shape[-2:] == (4, 3)
    check_movie(movie, frames=expected_frames(sim / "trajectory.npz", 40), max_frames=40, fps=30, dpi=60)
    check_png(sim / "report.png")


@pytest.mark.slow
def test_fps_sets_the_duration(runs):
    _, fast = finished(runs, "m3")
    cwd, slow = finished(runs, "m3_fps10")
    frames = expected_frames(cwd / "data" / "m3_fps10" / "sim" / "analytic" / "trajectory.npz", 12)
    slow_info = check_movie(slow, frames=frames, max_frames=12, fps=10, dpi=40)
    fast_info = decode(fast)
    # a frame lasts 1/10 s instead of 1/30 s
    assert slow_info["secs"] / slow_info["frames"] == pytest.approx(3 * fast_info["secs"] / fast_info["frames"],
                                                                    rel=0.15)


@pytest.mark.slow
def test_nonpositive_max_frames_keeps_every_row_and_movie_dir_is_honoured(runs):
    cwd, movie = finished(runs, "all")
    rows = len(np.load(cwd / "data" / "all" / "sim" / "analytic" / "trajectory.npz")["dt"])
    assert rows == 31
    check_movie(movie, frames=rows, max_frames=0, fps=30, dpi=40)
    assert not (cwd / "data" / "movie" / "nbody_movie_all_analytic.mp4").exists()
    assert sorted(p.name for p in movie.parent.iterdir()) == [movie.name], "no temporary files left behind"


@pytest.mark.slow
def test_training_movie_and_report(runs):
    cwd, movie = finished(runs, "tr")
    assert movie == cwd / "data" / "movie" / "nbody_movie_tr_train.mp4"
    trajectory = cwd / "data" / "tr" / "train_trajectory.npz"
    rows = len(np.load(trajectory)["dt"])
    assert rows > 5, "enough training rows to downsample"
    check_movie(movie, frames=expected_frames(trajectory, 5), max_frames=5, fps=30, dpi=120)
    check_png(cwd / "data" / "tr" / "train_report.png")


@pytest.mark.slow
def test_movie_dir_holds_only_finished_movies(runs):
    cwd, _ = finished(runs, "m3")
    for name in ("m3_fps10", "m4", "tr"):
        finished(runs, name)
    names = sorted(p.name for p in (cwd / "data" / "movie").iterdir())
    assert names == sorted(Path(RUNS[n][1]).name for n in ("m3", "m3_fps10", "m4", "tr"))


# frame selection -------------------------------------------------------------------------------

def test_frame_indices_all_rows_when_max_frames_nonpositive_or_enough():
    dt = np.r_[0.0, np.linspace(1, 2, 99)]
    for max_frames in (0, -1, 100, 500):
        assert np.array_equal(frame_indices(dt, max_frames), np.arange(100))


def test_frame_indices_keep_the_smallest_steps():
    rng = np.random.default_rng(0)
    dt = np.r_[0.0, rng.uniform(0.5, 1.0, 999)]
    close = rng.choice(np.arange(1, 1000), 8, replace=False)
    dt[close] = rng.uniform(1e-6, 1e-4, 8)  # close encounters, between the evenly spaced rows
    idx = frame_indices(dt, 50)
    assert set(close) <= set(idx)
    assert set(np.argsort(dt[1:])[:50 // 5] + 1) <= set(idx), "the max_frames // 5 smallest steps"
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) <= 50
    assert np.all(np.diff(idx) > 0)


def test_frame_indices_ignore_rows_that_stand_still():
    dt = np.r_[0.0, np.ones(199)]
    dt[120:] = 0.0  # this system reached its end while others went on
    dt[40] = 1e-3
    idx = frame_indices(dt, 10)
    even = set(np.linspace(0, 199, 10 - 2).round().astype(int))
    extra = [i for i in idx if i not in even]
    assert 40 in idx and all(dt[i] > 0 for i in extra)


@pytest.mark.parametrize("max_frames", range(1, 25))
def test_frame_indices_never_exceed_max_frames(max_frames):
    dt = np.r_[0.0, np.geomspace(1e-5, 1, 299)[::-1]]
    idx = frame_indices(dt, max_frames)
    assert 1 <= len(idx) <= max_frames
    assert np.all(np.diff(idx) > 0) and idx[0] == 0 and idx[-1] <= 299
    if max_frames >= 2:
        assert idx[-1] == 299
    if max_frames >= 3:
        assert 299 in idx and 1 <= len(set(idx) & {299, 298, 297}), "the smallest steps are the last rows here"


@pytest.mark.slow
def test_write_movie_draws_the_first_system_of_a_3d_batch(tmp_path):
    S, B, N = 12, 2, 3
    rng = np.random.default_rng(1)
    time = np.repeat(np.linspace(0, 1, S)[:, None], B, 1)
    dt = np.diff(time, axis=0, prepend=0.0)
    position = rng.normal(size=(S, B, N, 3))
    energy = -1 - 1e-6 * rng.random((S, B))
    angular_momentum = rng.normal(size=(S, B, 3))
    path = write_movie(tmp_path / "sub" / "m.mp4", time, dt, position, energy, angular_momentum, title="t",
                       max_frames=0, fps=12, dpi=40)
    assert path == tmp_path / "sub" / "m.mp4"
    check_movie(path, frames=S, max_frames=0, fps=12, dpi=40)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.mp4"]
