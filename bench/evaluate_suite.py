"""How long ``nbody-runner evaluate`` takes, through the real CLI: the Kepler problem alone
(issue 19's target: under 15 s on 2 cores) and the whole suite with every baseline and one
learned checkpoint (issue 16's: under 5 minutes).

Trains ``configs/kepler.toml`` first in a temporary working directory (its time is reported
too), then runs, in the same directory:

    nbody-runner evaluate --config configs/kepler.toml --eval-suite kepler
    nbody-runner evaluate --config configs/kepler.toml

and reports each command's wall time, CPU time and peak memory, and the rows it wrote.

    python bench/evaluate_suite.py              # the figures, and bench/results/evaluate_suite.json
    python bench/evaluate_suite.py --skip-suite # only the Kepler problem

Prints a markdown table (paste it into docs/BENCHMARKS.md or docs/SCIENCE.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    engine_env,
    machine,
    machine_note,
    markdown_table,
    run_with_rusage,
    runner_cmd,
    write_results,
)

CONFIG = REPO / "configs" / "kepler.toml"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, args: list[str], workdir: Path) -> dict:
    before = _cpu_seconds()
    rc, wall, rss = run_with_rusage(runner_cmd(*args), workdir, engine_env(), workdir / f"{name}.log", None)
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}); see {workdir / (name + '.log')}:\n"
                         + (workdir / f"{name}.log").read_text()[-2000:])
    shown = [str(Path(a).relative_to(REPO)) if a.startswith(str(REPO)) else a for a in args]
    result = {"case": name, "command": "nbody-runner " + " ".join(shown), "wall_s": wall,
              "cpu_s": _cpu_seconds() - before, "peak_rss_mb": rss / 2**20}
    table = workdir / "data" / "kepler" / "eval" / "table.json"
    if args[0] == "evaluate" and table.exists():
        rows = json.loads(table.read_text())["rows"]
        result["rows"] = len(rows)
        result["problems"] = sorted({r["problem"] for r in rows})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-suite", action="store_true", help="only the Kepler problem")
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = str(CONFIG)
        results = [measure("train kepler.toml", ["train", "--config", config], workdir),
                   measure("evaluate, Kepler problem", ["evaluate", "--config", config, "--eval-suite", "kepler"],
                           workdir)]
        if not args.skip_suite:
            results.append(measure("evaluate, whole suite", ["evaluate", "--config", config], workdir))
    print(markdown_table(["case", "command", "wall s", "CPU s", "peak MB", "rows"],
                         [[r["case"], f"`{r['command']}`", r["wall_s"], r["cpu_s"], r["peak_rss_mb"], r.get("rows")]
                          for r in results]))
    print()
    print(machine_note(info))
    print("written:", write_results("evaluate_suite", {"machine": info, "results": results}))


if __name__ == "__main__":
    main()
