"""Two or more sweeps side by side, arm by arm: the same grid before and after a change.

  python -m analysis.compare SWEEP_A SWEEP_B [...] [--metric eval/gold_pass@1] [--out FILE]

An arm is one combination of the config keys any of the sweeps swept; a sweep that held such a key
fixed meets the others' arms at its value (a sweep that swept nothing is one arm). For each arm and
sweep: the final held-out metric of its finished runs, mean and 95% interval over seeds and
held-out prompts (as in the report); for each sweep after the first, its difference from the first,
paired by seed where the two share seeds (analysis.contrast: an interval over seeds and held-out
prompts), else Welch's test over per-seed finals (unpaired), with a verdict Holm-corrected over the
arms. The keys that are fixed in each sweep but
differ between them (the change being compared) are listed above the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import ablation, contrast
from analysis.load import Sweep, config_columns, load_sweep
from harness.store import FINAL_STAGE, GOLD


def changed_keys(sweeps: dict[str, Sweep], stage: str = FINAL_STAGE) -> pd.DataFrame:
    """Config keys fixed within each sweep whose value differs between them."""
    configs = {name: ablation.stage_config(s.runs, stage) for name, s in sweeps.items()}
    keys = set.intersection(*(set(config_columns(c)) for c in configs.values())) - set(ablation.NOT_SWEPT)
    rows = []
    for key in sorted(k for k in keys if not k.startswith(("trial.", "tracking."))):
        values = {name: c[key].map(ablation.arm_label).unique() for name, c in configs.items()}
        if all(len(v) == 1 for v in values.values()) and len({v[0] for v in values.values()}) > 1:
            rows.append({"key": key, **{name: v[0] for name, v in values.items()}})
    return pd.DataFrame(rows)


def compare(sweeps: dict[str, Sweep], metric: str = GOLD, stage: str = FINAL_STAGE) -> pd.DataFrame:
    """One row per shared arm: each sweep's mean [low, high] (seeds), and each later sweep's
    difference from the first: interval, paired or not, p, Holm-adjusted p and verdict."""
    tables = {name: ablation.per_run(s.runs, s.history, metric, stage) for name, s in sweeps.items()}
    # Every key any sweep swept: a sweep that held one fixed meets the others' arms at its value
    # (a baseline at beta=0 against a beta sweep), never pooled over their values.
    shared = sorted(set.union(*(set(ablation.swept(s.runs)) for s in sweeps.values())))
    tables = {name: t.assign(**{k: ablation.NULL for k in shared if k not in t}) for name, t in tables.items()}
    first = next(iter(sweeps))
    arms = sorted({tuple(row) for t in tables.values() for row in t[shared].map(ablation.arm_label).to_numpy()},
                  key=lambda arm: [_order(label) for label in arm])
    rows = []
    for arm in arms:
        row, parts = dict(zip(shared, arm)), {}
        for name, table in tables.items():
            part = table[(table[shared].map(ablation.arm_label) == list(arm)).all(axis=1)] if shared else table
            if part.empty:
                continue
            summary, parts[name] = ablation.arm_summary(part), part
            row[name] = f"{summary['mean']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}] ({summary['runs']})"
        for name in list(parts)[1:]:
            if first in parts:
                found = contrast.arm_contrast(parts[first], parts[name])
                row.update({f"{name} - {first}": found["difference"],
                            f"{name}: 95% interval": f"[{found['low']:.4g}, {found['high']:.4g}]",
                            f"{name}: paired": found["paired"], f"{name}: seeds": found["seeds"],
                            f"{name}: p": found["p"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in list(sweeps)[1:]:  # Holm over the arms that both sweeps ran, for each sweep against the first
        if f"{name}: p" in table:
            both = table[f"{name}: seeds"].notna()
            checked = contrast.verdicts(table.loc[both, [f"{name}: p", f"{name}: seeds"]].set_axis(["p", "seeds"], axis=1))
            table[f"{name}: p_holm"] = checked.p_holm
            table[f"{name}: verdict"] = checked.verdict.reindex(table.index).fillna(f"no {first} arm")
    return table


def _order(label: str) -> tuple:
    """Arms by their numbers where they are numbers (0.04 before 0.1), then by text, null last."""
    if label == ablation.NULL:
        return 2, 0.0, ""
    try:
        return 0, float(label), ""
    except ValueError:
        return 1, 0.0, label


def write_comparison(paths: list[str], metric: str = GOLD) -> str:
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    sweeps = {name: load_sweep(p) for name, p in zip(names, paths)}
    changed, table = changed_keys(sweeps), compare(sweeps, metric)
    lines = [f"# {' vs '.join(names)}: final {metric}\n",
             "What differs between the sweeps (fixed within each):\n",
             changed.to_markdown(index=False) if len(changed) else "nothing but what they swept",
             "\nEach cell: mean [95% interval over seeds and held-out prompts] (seeds). Each later sweep's "
             f"difference from the first, {names[0]}, is paired by seed where the two share seeds (`paired`: its "
             "interval from the seeds' differences and the held-out prompts), else Welch's test over per-seed "
             f"finals; the verdict is at alpha {contrast.ALPHA} after Holm's correction over the arms (`p_holm`).\n",
             table.to_markdown(index=False, floatfmt=".4g")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", help="two or more sweep directories")
    parser.add_argument("--metric", default=GOLD)
    parser.add_argument("--out", help="write the Markdown here instead of printing it")
    args = parser.parse_args(argv)
    if len(args.sweeps) < 2:
        parser.error("give two or more sweep directories")
    try:
        text = write_comparison(args.sweeps, args.metric)
    except FileNotFoundError as error:
        print(f"analysis.compare: {error}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
