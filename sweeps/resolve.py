"""Add seeds to a grid sweep in batches until its contrasts resolve, or the seed budget is spent.

    python -m sweeps.resolve SWEEP_DIR --max-seeds 12 [--batch 3] [--contrast LABEL ...]
                             [--spending obrien_fleming|pocock]

The contrasts are the report's (each arm against the first and the one before it, per swept key),
one family; `--contrast` keeps those named ("b - a", prefixed "key=value: " where other keys were
swept; an unknown label is refused with the list). Each batch reruns the sweep's own command for the
next seeds into SWEEP_DIR/seeds<..>_<job>, beside the runs already there; a run whose settings are no
arm's of the plan (a preset edited since) is refused, never pooled. The looks are a group-sequential design fixed at the first call
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
from analysis.ablation import NOT_SWEPT
from analysis.load import config_columns

PLAN_FILE = sequential.PLAN_FILE
DROPPED_HYDRA = ("hydra.sweep.dir=", "hydra.sweep.subdir=", "hydra.mode=")


def original_command(sweep_dir: Path) -> dict:
    """The task and Hydra overrides the grid ran with (multirun.yaml: a batch rewrites it, so it is
    read once, at the first call), less its seeds and directory."""
    recorded = sweep_dir / "multirun.yaml"
    if not recorded.exists():
        raise SystemExit(f"{sweep_dir}: no multirun.yaml, so not a Hydra multirun sweep to add seeds to")
    hydra = yaml.safe_load(recorded.read_text())["hydra"]
    if not hydra["sweeper"]["_target_"].endswith("BasicSweeper"):
        raise SystemExit(f"{sweep_dir}: swept by {hydra['sweeper']['_target_']}, not a grid: its arms do not share seeds")
    return {"task": [o for o in hydra["overrides"]["task"] if o.split("=", 1)[0].lstrip("+") != "seed"],
            "hydra": [o for o in hydra["overrides"]["hydra"] if not o.startswith(DROPPED_HYDRA)]}


def arm_settings(table: pd.DataFrame) -> set[str]:
    """Each finished run's settings but its seed, name and what changes no number (ablation.NOT_SWEPT):
    what makes an arm, so that a run of other settings (a preset edited since) is never pooled into one."""
    keys = [k for k in config_columns(table) if k not in NOT_SWEPT and not k.startswith(("trial.", "tracking."))]
    return {json.dumps(row, sort_keys=True, default=str) for row in table[keys].to_dict(orient="records")}


def launch(sweep_dir: Path, command: dict, seeds: list[int]) -> None:
    """The sweep's own command for `seeds`, into SWEEP_DIR beside its runs. A job that fails is the
    sweep's to record (the looks use the seeds finished in every arm); a command that fails is not."""
    subdir = f"seeds{'_'.join(map(str, seeds))}_" + "${hydra.job.num}"
    done = subprocess.run([sys.executable, "-m", "harness.train", "-m", *command["task"],
                           "seed=" + ",".join(map(str, seeds)), *command["hydra"], f"hydra.sweep.dir={sweep_dir}",
                           f"hydra.sweep.subdir={subdir}"], check=False)
    if done.returncode:
        raise SystemExit(f"{sweep_dir}: the sweep's command for seeds {seeds} exited {done.returncode}; see its output above")


def load_plan(sweep_dir: Path, requested: dict, table: pd.DataFrame) -> dict:
    """The plan made at the first call (with the seeds, the arms' settings and the command then), or a
    new one. A plan changed afterwards is refused: it would void the guarantee."""
    path = sweep_dir / PLAN_FILE
    if path.exists():
        kept = json.loads(path.read_text())
        changed = {k: v for k, v in requested.items() if v not in (None, []) and kept["plan"].get(k) != v}
        if changed:
            raise SystemExit(f"{path}: the plan was fixed at the first look ({kept['plan']}); changing "
                             f"{changed} afterwards would void its guarantee")
        return kept
    seeds = sorted(int(s) for s in table.seed.unique())
    try:
        plan = sequential.Plan(first_seeds=len(seeds), max_seeds=requested["max_seeds"],
                               batch=len(seeds) if requested["batch"] is None else requested["batch"],
                               spending=requested["spending"] or sequential.DEFAULT_SPENDING,
                               contrasts=tuple(requested["contrasts"]))
    except ValueError as bad:
        raise SystemExit(f"{sweep_dir}: {bad}") from None
    kept = {"plan": plan.to_dict(), "command": original_command(sweep_dir), "arms": sorted(arm_settings(table)),
            "seeds": seeds + list(range(max(seeds) + 1, max(seeds) + 1 + plan.max_seeds - len(seeds)))}
    path.write_text(json.dumps(kept, indent=2) + "\n")
    return kept


def current_finals(sweep_dir: Path, kept: dict) -> pd.DataFrame:
    """The sweep's finished runs now, refused in one line if one ran with settings no arm had."""
    table, _ = contrast.sweep_finals(sweep_dir)
    stray = arm_settings(table) - set(kept["arms"])
    if stray:
        raise SystemExit(f"{sweep_dir}: a run's settings are no arm's of the plan (was the preset edited since?): "
                         f"{sorted(stray)[0]}")
    return table


def resolve(sweep_dir: Path, max_seeds: int | None = None, batch: int | None = None, spending: str | None = None,
            named: list[str] = (), stop: bool = False) -> pd.DataFrame:
    table, keys = contrast.sweep_finals(sweep_dir)
    known = contrast.sweep_contrasts(table, keys).contrast.tolist() if len(table) and keys else []
    if not known:
        raise SystemExit(f"{sweep_dir}: no two arms share a finished seed: nothing to contrast")
    unknown = [n for n in named if n not in known]
    if unknown:
        raise SystemExit(f"--contrast {unknown[0]!r}: not one of this sweep's contrasts: {'; '.join(known)}")
    kept = load_plan(sweep_dir, {"max_seeds": max_seeds, "batch": batch, "spending": spending,
                                 "contrasts": list(named)}, table)
    plan = sequential.Plan(**{**kept["plan"], "contrasts": tuple(kept["plan"]["contrasts"])})

    def contrasts_at(seeds: int, confidence: float) -> pd.DataFrame:
        current = current_finals(sweep_dir, kept)
        rows = contrast.sweep_contrasts(current[current.seed.isin(kept["seeds"][:seeds])], keys, confidence)
        return rows[rows.contrast.isin(plan.contrasts)] if plan.contrasts else rows

    def complete() -> set[int]:
        current = current_finals(sweep_dir, kept)
        return {seed for seed, runs in current.groupby("seed") if arm_settings(runs) == set(kept["arms"])}

    def add_seeds(seeds: int) -> None:
        # A seed short of an arm (a failed or killed job) is run again in every arm: the grid's command.
        missing = [s for s in kept["seeds"][:seeds] if s not in complete()]
        if missing:
            launch(sweep_dir, kept["command"], missing)

    if stop:  # the budget ends here: the last look that the seeds finished in every arm support, none added
        done = complete()
        leading = next((i for i, seed in enumerate(kept["seeds"]) if seed not in done), len(kept["seeds"]))
        kept["stopped_at"] = sum(seeds <= leading for seeds in plan.looks())
        if not kept["stopped_at"]:
            raise SystemExit(f"{sweep_dir}: --stop: the first look's {plan.first_seeds} seeds are not finished in every arm")
    result = sequential.sequential(plan, contrasts_at, add_seeds, kept.get("stopped_at"))
    kept["result"] = result.drop(columns=["p_holm"], errors="ignore").to_dict(orient="records")
    (sweep_dir / PLAN_FILE).write_text(json.dumps(kept, indent=2, default=lambda number: number.item()) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--max-seeds", type=int, help="the seed budget per arm (required at the first call)")
    parser.add_argument("--batch", type=int, help="seeds added per look (default: the seeds the sweep has)")
    parser.add_argument("--spending", choices=sorted(sequential.SPENDING), help="how alpha is spent over the looks")
    parser.add_argument("--contrast", action="append", default=[], help="a contrast's label, as the report gives it")
    parser.add_argument("--stop", action="store_true", help="end the plan at the last look its finished seeds "
                                                           "support, adding none (when the budget runs out)")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / PLAN_FILE).exists() and args.max_seeds is None:
        parser.error("--max-seeds is needed at the first call: the plan is fixed then")
    print(resolve(args.sweep_dir, args.max_seeds, args.batch, args.spending, args.contrast, args.stop)
          .to_string(index=False))


if __name__ == "__main__":
    main()
