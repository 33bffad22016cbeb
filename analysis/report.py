"""Every plot that applies to a sweep, as PNG, and a Markdown page with its tables and fits.

  python -m analysis.report SWEEP_DIR [--out DIR]

SWEEP_DIR is a sweep's directory (its run stores, or only its offline W&B runs) or one run's.
Writes into DIR (default SWEEP_DIR/report): report.md and
  ablation_<key>.png, learning_curves_<key>.png   for each swept config key
  live_groups.png                                  when runs trained on the gold reward
  overoptimisation.png                             when runs trained on the proxy
  cold_start.png                                   when sft.cold_start_size was swept
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import ablation, live, overopt  # noqa: E402
from analysis.load import load_sweep  # noqa: E402

SHOWN = ["run", "seed", "eval/gold_pass@1", "eval/proxy_reward", "eval/kl_to_initial"]


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") + "\n"


def write_report(sweep_dir, out_dir=None) -> Path:
    """Write the plots and report.md; return the report's path."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs, history = sweep.runs, sweep.history
    keys = ablation.swept(runs)
    grpo = runs[runs.stage == "grpo"]
    sections = [f"# Sweep report: {sweep_dir.name}\n",
                f"{grpo.run.nunique()} runs; swept: {', '.join(keys) or 'nothing'}; "
                f"status: {grpo.status.value_counts().to_dict()}\n",
                "## Final held-out metrics (GRPO stage)\n",
                _table(grpo[[c for c in [*SHOWN[:2], *keys, *SHOWN[2:]] if c in grpo]])]

    table = ablation.per_run(runs, history, stage="grpo")
    for key in keys:
        others = [k for k in keys if k != key]  # kept apart, never pooled
        summary = pd.concat([ablation.summarise(part, key, "final").merge(
            ablation.summarise(part, key, "best"), on=[key, "runs"], suffixes=("_final", "_best")).assign(
            **dict(zip(others, values if isinstance(values, tuple) else (values,))))
            for values, part in (table.groupby(others) if others else [((), table)])], ignore_index=True)
        summary = summary[[key, *others, *[c for c in summary if c not in (key, *others)]]]
        ablation_png = _save(ablation.plot_ablation(table, key, hue=others), out / f"ablation_{key}.png")
        curves_png = _save(ablation.plot_learning_curves(runs, history, key, hue=others),
                           out / f"learning_curves_{key}.png")
        sections += [f"## {key}\n", f"Held-out gold pass@1, mean and 95% t-interval over seeds:\n",
                     _table(summary), f"\n![ablation]({ablation_png})\n\n![learning curves]({curves_png})\n"]

    points = live.measured_live_points(runs, history)
    if len(points):
        ks = sorted(points.K.unique())
        png = _save(live.plot_live_groups(ks, points), out / "live_groups.png")
        sections += ["## Live groups\n", "Measured live fraction by K and pass-rate bin (runs on the gold reward), "
                     "against 1 - p^K - (1-p)^K:\n", _table(points), f"\n![live groups]({png})\n"]

    proxy_runs = set(grpo.run[grpo["task.reward"] == "proxy"])
    rl = overopt.rl_points(runs, history)
    rl = rl[rl.run.isin(proxy_runs)]
    if len(rl):
        by = next((k for k in keys if rl[k].astype(str).nunique() > 1), None)  # what varies among them
        bon = None
        if len(sweep.best_of_n):
            bon = overopt.best_of_n(sweep.best_of_n[sweep.best_of_n.run.isin(proxy_runs)])
        png = _save(overopt.plot_overoptimisation(rl, by, bon), out / "overoptimisation.png")
        sections += ["## Reward over-optimisation\n",
                     "Gains over the GRPO stage's start against d = sqrt(KL); fits of Gao et al. 2022, "
                     "RL: R(d) = d (alpha - beta log d), best-of-n: R(d) = d (alpha - beta d):\n",
                     _table(overopt.fit_table(rl, by, bon)), f"\n![over-optimisation]({png})\n"]
        if bon is not None:
            sections += ["Best-of-n from the GRPO stage's initial policy, ranked by the proxy:\n", _table(bon)]

    if "sft.cold_start_size" in keys:
        table = ablation.cold_start_table(runs, history)
        png = _save(ablation.plot_cold_start(table), out / "cold_start.png")
        sections += ["## Cold start\n", _table(table), f"\n![cold start]({png})\n"]

    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="a sweep directory (or one run's)")
    parser.add_argument("--out", help="where to write (default: SWEEP/report)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.sweep, args.out)
    except FileNotFoundError as error:
        print(f"analysis.report: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
