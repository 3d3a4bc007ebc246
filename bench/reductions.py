"""Why the batched step is slow: torch's CPU ``sum`` over a tiny dimension.

The engine reduces over the spatial dimension (D = 2 or 3) and the body dimension (N) with
``.sum(-1)`` / ``.sum(2)`` on float64 tensors shaped (B, N, N, D) (``physics``, ``policies``,
and the recorder's diagnostics on (256 x B, N, D) chunks). This times those reductions against
an elementwise multiply of the same tensor and against equivalent formulations, one thread.

    python bench/reductions.py
    python bench/reductions.py --batch 4096

Prints a markdown table and writes bench/results/reductions.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine, machine_note, markdown_table, write_results


def per_call_us(f, seconds: float = 0.3) -> float:
    f()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        f()
        n += 1
    return 1e6 * (time.perf_counter() - start) / n


def _cases(torch, dtype, batch: int, chunk_rows: int) -> list:
    x = torch.randn(batch, 2, 2, 2, dtype=dtype)
    ones = torch.ones(2, dtype=dtype)
    flat = torch.randn(chunk_rows, 2, dtype=dtype)
    return [
        (f"x * x, x: {tuple(x.shape)}", lambda: x * x),
        ("x.sum(-1)", lambda: x.sum(-1)),
        ("x.sum(2)", lambda: x.sum(2)),
        ("x @ ones(2)", lambda: x @ ones),
        ("x[..., 0] + x[..., 1]", lambda: x[..., 0] + x[..., 1]),
        ("torch.linalg.vector_norm(x, dim=-1)", lambda: torch.linalg.vector_norm(x, dim=-1)),
        (f"y * y, y: {tuple(flat.shape)}", lambda: flat * flat),
        ("y.sum(-1)", lambda: flat.sum(-1)),
        ("y[:, 0] + y[:, 1]", lambda: flat[:, 0] + flat[:, 1]),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1024, help="systems B of the (B, 2, 2, 2) pair tensor")
    p.add_argument("--chunk-rows", type=int, default=256 * 1024, help="rows of the recorder-sized (rows, 2) tensor")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    info = machine()
    print(machine_note(info))
    rows, results = [], []
    for dtype in (torch.float64, torch.float32):
        cases = _cases(torch, dtype, args.batch, args.chunk_rows)
        for name, f in cases:
            us = per_call_us(f)
            results.append({"dtype": str(dtype).replace("torch.", ""), "op": name, "us": us})
            rows.append([str(dtype).replace("torch.", ""), f"`{name}`", f"{us:.1f}"])
    text = markdown_table(["dtype", "operation", "us per call (1 thread)"], rows)
    print(text)
    path = write_results("reductions", {"machine": info, "batch": args.batch, "chunk_rows": args.chunk_rows,
                                        "results": results, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
