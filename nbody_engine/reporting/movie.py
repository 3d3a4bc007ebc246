"""MP4 movies of a trajectory: the orbits with trails, |dE/E| and |dL/L| and dt against time.

Any number of bodies, 2D or 3D (drawn in the x-y projection). Frames are rendered with
matplotlib and encoded by ``imageio-ffmpeg``, whose wheels ship an ffmpeg binary, so no system
ffmpeg is needed; where no binary ships, it falls back to the ``ffmpeg`` on the PATH (or the
one ``IMAGEIO_FFMPEG_EXE`` names).
"""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np

from ..config.errors import InputError
from ..physics.gravity import relative_errors
from ..runs.directory import atomic_path
from .curves import positive

BASE_PIXELS, BASE_DPI = (1280, 432), 120
TRAIL = 200


def check_encoder() -> str:
    """The ffmpeg binary movies use; InputError (before any work) if there is none."""
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        raise InputError("movie = true needs ffmpeg: imageio-ffmpeg ships none for this platform; install"
                         " ffmpeg (or point IMAGEIO_FFMPEG_EXE at one), or set movie = false") from None


def frame_size(dpi: int) -> tuple[int, int]:
    """Frame pixels for ``dpi``: the base size scaled, rounded to multiples of 16 (H.264 blocks)."""
    return tuple(max(16, int(round(p * dpi / BASE_DPI / 16)) * 16) for p in BASE_PIXELS)


def frame_indices(dt: np.ndarray, max_frames: int) -> np.ndarray:
    """Rows to draw: all of them when ``max_frames <= 0`` or they fit; otherwise evenly spaced
    rows plus the rows of the smallest steps (close encounters), so those are never dropped."""
    n = len(dt)
    if max_frames <= 0 or n <= max_frames:
        return np.arange(n)
    # at least two evenly spaced rows (first and last) before any smallest-step row; with fewer
    # than three frames there is no room for one
    keep_small = max(1, max_frames // 5) if max_frames >= 3 else 0
    smallest = np.argsort(np.where(dt[1:] > 0, dt[1:], np.inf), kind="stable")[:keep_small] + 1
    even = np.linspace(0, n - 1, max_frames - keep_small).round().astype(int)
    return np.unique(np.concatenate([even, smallest]))


def write_movie(path: str | Path, time: np.ndarray, dt: np.ndarray, position: np.ndarray, energy: np.ndarray,
                angular_momentum: np.ndarray, *, title: str, max_frames: int = 1000, fps: int = 30,
                dpi: int = 120) -> Path:
    """Encode the first system of a trajectory: time, dt, energy (S, B); position (S, B, N, D);
    angular momentum (S, B) or (S, B, 3). Returns ``path``; written atomically."""
    path = Path(path)
    check_encoder()
    size = frame_size(dpi)
    rel_dE, rel_dL = relative_errors(energy, angular_momentum)
    figure = _MovieFigure(time[:, 0], dt[:, 0], position[:, 0], rel_dE[:, 0], rel_dL[:, 0], size, dpi, title)
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), size, fps=fps, codec="libx264", macro_block_size=16,
                                             output_params=["-f", "mp4"], ffmpeg_log_level="error")
        writer.send(None)
        try:
            for row in frame_indices(dt[:, 0], max_frames):
                writer.send(figure.frame(row))
        finally:
            writer.close()
            figure.close()
    return path


class _MovieFigure:
    """The three panels, drawn once from the whole trajectory; each frame only moves the data."""

    def __init__(self, time, dt, position, rel_dE, rel_dL, size, dpi, title) -> None:
        from .plots import dt_panel, errors_panel, new_figure, orbit_panel  # matplotlib: only for a movie

        self.time, self.dt, self.position, self.rel_dE, self.rel_dL = time, dt, position, rel_dE, rel_dL
        self.title = title
        self.fig, (orbit_ax, err_ax, dt_ax) = new_figure(3, (size[0] / dpi, size[1] / dpi), dpi)
        orbit_panel(orbit_ax, position[:1], limits=_orbit_limits(position))
        errors_panel(err_ax, time, rel_dE, rel_dL)
        dt_panel(dt_ax, time, dt)
        self.fig.tight_layout(rect=(0, 0, 1, 0.93))
        n_bodies = position.shape[1]
        self.trails = orbit_ax.lines[0::2][:n_bodies]
        self.dots = orbit_ax.lines[1::2][:n_bodies]
        self.series = [(line, y) for line, y in zip(err_ax.lines, (rel_dE, rel_dL))] + [(dt_ax.lines[0], dt)]

    def frame(self, row: int) -> np.ndarray:
        """The RGB frame (H, W, 3) at trajectory row ``row``."""
        start = max(0, row + 1 - TRAIL)
        for b, (trail, dot) in enumerate(zip(self.trails, self.dots)):
            trail.set_data(self.position[start:row + 1, b, 0], self.position[start:row + 1, b, 1])
            dot.set_data(self.position[row:row + 1, b, 0], self.position[row:row + 1, b, 1])
        for line, y in self.series:
            line.set_data(self.time[1:row + 1], positive(y[1:row + 1]))
        self.fig.suptitle(f"{self.title}   t = {self.time[row]:.4g}   step {row}", fontsize=10)
        self.fig.canvas.draw()
        return np.ascontiguousarray(np.asarray(self.fig.canvas.buffer_rgba())[..., :3])

    def close(self) -> None:
        self.fig.clear()



def write_run_movie(path: str | Path, arrays: dict[str, np.ndarray], title: str, cfg) -> Path:
    """:func:`write_movie` of a recorded ``arrays`` dict with the Movie settings of ``cfg``."""
    return write_movie(path, arrays["time"], arrays["dt"], arrays["position"], arrays["energy"],
                       arrays["angular_momentum"], title=title, max_frames=cfg.movie_max_frames, fps=cfg.movie_fps,
                       dpi=cfg.movie_dpi)

def _orbit_limits(pos: np.ndarray):
    xy = pos[..., :2].reshape(-1, 2)
    lo, hi = np.nanmin(xy, 0), np.nanmax(xy, 0)
    pad = 0.05 * max(float((hi - lo).max()), 1e-12)
    return (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad)
