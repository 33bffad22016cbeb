"""Add seeds to a grid sweep in batches until its contrasts resolve, or the seed budget is spent.

    python -m sweeps.resolve SWEEP_DIR --max-seeds 12 [--batch 3] [--contrast LABEL ...]
                             [--spending obrien_fleming|pocock]

The contrasts are the report's (each arm against the first and the one before it, per swept key;
`--contrast` keeps those named, as the report labels them). Each batch reruns the sweep's own command
for the next seeds (the arms' cold starts come from the stage cache as usual) into SWEEP_DIR, beside
the runs already there. The looks are a group-sequential design fixed at the first call
(analysis.sequential), so the verdicts hold however many seeds it took: stopping when a contrast
resolves does not inflate the false verdicts. The plan and the original command are kept in
SWEEP_DIR/resolve.json; calling again (after a kill, say) resumes it, and refuses a different plan.
What each contrast took is kept there too, and the sweep's report shows it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from analysis import contrast, sequential

PLAN_FILE = sequential.PLAN_FILE
DROPPED_HYDRA = ("hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra.mode=")


def original_command(sweep_dir: Path) -> dict:
    """The task and Hydra overrides the grid ran with (multirun.yaml), less its seeds and directory."""
    recorded = sweep_dir / "multirun.yaml"
    if not recorded.exists():
        raise SystemExit(f"{sweep_dir}: no multirun.yaml, so not a Hydra multirun sweep to add seeds to")
    hydra = yaml.safe_load(recorded.read_text())["hydra"]
    if not hydra["sweeper"]["_target_"].endswith("BasicSweeper"):
        raise SystemExit(f"{sweep_dir}: swept by {hydra['sweeper']['_target_']}, not a grid: its arms do not share seeds")
    return {"task": [o for o in hydra["overrides"]["task"] if not o.startswith("seed=")],
            "hydra": [o for o in hydra["overrides"]["hydra"] if not o.startswith(DROPPED_HYDRA)]}


def launch(sweep_dir: Path, command: dict, seeds: list[int]) -> None:
    """The sweep's own command for `seeds`, into SWEEP_DIR beside its runs (a failed job is the sweep's
    to record: the looks use the seeds that finished in every arm)."""
    subdir = f"seeds{seeds[0]}-{seeds[-1]}_" + "${hydra.job.num}"
    subprocess.run([sys.executable, "-m", "harness.train", "-m", *command["task"], "seed=" + ",".join(map(str, seeds)),
                    *command["hydra"], f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir={subdir}"], check=False)


def load_plan(sweep_dir: Path, requested: dict, seeds_now: list[int]) -> dict:
    """The plan made at the first call (with the seeds then and the original command), or a new one."""
    path = sweep_dir / PLAN_FILE
    if path.exists():
        kept = json.loads(path.read_text())
        asked = {k: v for k, v in requested.items() if v is not None}
        changed = {k: v for k, v in asked.items() if kept["plan"].get(k) != v}
        if changed:
            raise SystemExit(f"{path}: the plan was fixed at the first look ({kept['plan']}); changing "
                             f"{changed} afterwards would void its guarantee")
        return kept
    try:
        plan = sequential.Plan(first_seeds=len(seeds_now), max_seeds=requested["max_seeds"],
                               batch=requested["batch"] or len(seeds_now), spending=requested["spending"])
    except ValueError as bad:
        raise SystemExit(f"{sweep_dir}: {bad}") from None
    start = max(seeds_now) + 1
    kept = {"plan": plan.to_dict(), "command": original_command(sweep_dir),
            "seeds": seeds_now + list(range(start, start + plan.max_seeds - len(seeds_now)))}
    path.write_text(json.dumps(kept, indent=2) + "\n")
    return kept


def resolve(sweep_dir: Path, max_seeds: int | None = None, batch: int | None = None, spending: str | None = None,
            named: list[str] = ()) -> pd.DataFrame:
    table, keys = contrast.sweep_finals(sweep_dir)
    if not keys:
        raise SystemExit(f"{sweep_dir}: one arm only (no swept key besides seed): nothing to contrast")
    known = contrast.sweep_contrasts(table, keys).contrast.tolist()
    unknown = [n for n in named if n not in known]
    if unknown:
        raise SystemExit(f"--contrast {unknown[0]!r}: not one of this sweep's contrasts: {'; '.join(known)}")
    kept = load_plan(sweep_dir, {"max_seeds": max_seeds, "batch": batch, "spending": spending},
                     sorted(int(s) for s in table.seed.unique()))
    plan = sequential.Plan(**kept["plan"])

    def contrasts_at(seeds: int, confidence: float) -> pd.DataFrame:
        current, _ = contrast.sweep_finals(sweep_dir)
        rows = contrast.sweep_contrasts(current[current.seed.isin(kept["seeds"][:seeds])], keys, confidence)
        return rows[rows.contrast.isin(named)] if named else rows

    def add_seeds(seeds: int) -> None:
        present = set(contrast.sweep_finals(sweep_dir)[0].seed)
        missing = [s for s in kept["seeds"][:seeds] if s not in present]
        if missing:
            launch(sweep_dir, kept["command"], missing)

    result = sequential.sequential(plan, contrasts_at, add_seeds)
    kept["result"] = result.to_dict(orient="records")  # inf (seeds cannot resolve it) and NaN (unknown) kept apart
    (sweep_dir / PLAN_FILE).write_text(json.dumps(kept, indent=2, default=lambda number: number.item()) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--max-seeds", type=int, help="the seed budget per arm (required at the first call)")
    parser.add_argument("--batch", type=int, help="seeds added per look (default: the seeds the sweep has)")
    parser.add_argument("--spending", choices=sorted(sequential.SPENDING), help="how alpha is spent over the looks")
    parser.add_argument("--contrast", action="append", default=[], help="a contrast's label, as the report gives it")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / PLAN_FILE).exists():
        if args.max_seeds is None:
            parser.error("--max-seeds is needed at the first call: the plan is fixed then")
        args.spending = args.spending or sequential.DEFAULT_SPENDING
    print(resolve(args.sweep_dir, args.max_seeds, args.batch, args.spending, args.contrast).to_string(index=False))


if __name__ == "__main__":
    main()
