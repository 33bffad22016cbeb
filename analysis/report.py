"""Every plot that applies to a sweep, as PNG, and a Markdown page with its tables and fits.

  python -m analysis.report SWEEP_DIR [--out DIR]

SWEEP_DIR is a sweep's directory (its run stores, or only its offline W&B runs) or one run's.
Writes into DIR (default SWEEP_DIR/report): report.md and
  ablation_<key>.png, learning_curves_<key>.png,  for each swept config key (an ablation preset's `arm`
  entropy_<key>.png                                stands for the keys its arms set)
  learning_curves_<key>_seconds.png                when its values differ in training time
  live_groups.png                                  when runs trained on the gold reward
  overoptimisation.png                             when runs trained on the proxy
  cold_start.png, cold_start_live.png              when the cold start's size was swept (0: none)
  study_<figure>.png and .csv                      for an Optuna sweep, instead of the per-key ablations:
                                                   importances, history, intermediate, parallel, slices, pareto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import ablation, cold_start, compute, contrast, live, overopt, sequential, study  # noqa: E402
from analysis.load import Sweep, load_sweep  # noqa: E402
from analysis.raw import write_raw  # noqa: E402
from harness.store import FINAL_STAGE, GOLD, KL, PROXY  # noqa: E402

SHOWN = ["run", "status", "seed", GOLD, PROXY, KL]


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _table(frame: pd.DataFrame) -> str:
    """Markdown, four significant digits. A numeric column of whole numbers (N = 20000) prints as
    integers: tabulate would make it float beside float columns and print 2e+04."""
    whole = {c: frame[c].astype("int64").astype(object) for c in _whole_columns(frame)}  # Python ints stay ints
    return frame.assign(**whole).to_markdown(index=False, floatfmt=".4g") + "\n"


def _whole_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric columns (not bool) whose every value is a whole number small enough to be exact;
    a column with a missing value keeps its float `nan`."""
    numeric = frame.select_dtypes("number").columns.difference(frame.select_dtypes("bool").columns)
    return [c for c in numeric if frame[c].notna().all() and len(frame[c])
            and ((frame[c] % 1 == 0) & (frame[c].abs() < 2**53)).all()]


def overview(sweep: Sweep, name: str, keys: list[str]) -> list[str]:
    grpo = ablation.with_null_arms(sweep.runs[sweep.runs.stage == FINAL_STAGE])
    return [f"# Sweep report: {name}\n",
            f"{grpo.run.nunique()} runs; swept: {', '.join(keys) or 'nothing'}; "
            f"status: {grpo.status.value_counts().to_dict()}\n",
            "## Last held-out metrics (GRPO stage; final only where the status is finished)\n",
            _table(grpo[[c for c in [*SHOWN[:3], *keys, *SHOWN[3:]] if c in grpo]])]


def ablations(sweep: Sweep, keys: list[str], out: Path) -> list[str]:
    table, sections = ablation.per_run(sweep.runs, sweep.history, stage=FINAL_STAGE), []
    left_out = ablation.unfinished(sweep.runs, sweep.history, stage=FINAL_STAGE)
    if len(left_out):
        counts = ", ".join(f"{n} {status}" for status, n in left_out.status.value_counts().items())
        sections += [f"## Runs left out of the means ({counts})\n",
                     "A pruned, stopped or unfinished run has no final value; its last evaluation, for the record:\n",
                     _table(left_out)]
    if table.empty:  # all pruned, all failed, or still running: nothing has a final value
        return sections + ["## Arms and contrasts\n", "No GRPO run finished, so no arm has a final value to "
                           "summarise or contrast; the last evaluations of the runs are listed above.\n"]
    if not keys:  # one arm: a level, nothing to contrast
        one = pd.DataFrame([ablation.arm_summary(table, "final")])
        return sections + ["## The one arm\n", "This sweep varied nothing but the seed: one arm, so no contrast. "
                           "Its held-out gold pass@1, mean and 95% interval over seeds and held-out prompts:\n",
                           _table(one), *few_seeds(one)]
    for key in keys:
        others = [k for k in keys if k != key]
        ablation_png = _save(ablation.plot_ablation(table, key, hue=others), out / f"ablation_{key}.png")
        curves_png = _save(ablation.plot_learning_curves(sweep.runs, sweep.history, key, hue=others),
                           out / f"learning_curves_{key}.png")
        summary = ablation.summary_table(table, key, others)
        contrasts = contrast.arm_contrasts(table, key, ablation.arms(table[key]), others)
        sections += [f"## {key}\n", "Held-out gold pass@1, mean and 95% interval over seeds and "
                     "held-out prompts (`runs`: the seeds behind each row):\n", _table(summary), *few_seeds(summary),
                     *contrast_section(key, contrasts), *equal_cost_section(sweep, table, key, others),
                     f"\n![ablation]({ablation_png})\n\n![learning curves]({curves_png})\n"]
        if "entropy" in sweep.history:  # clip-higher's claim: with a symmetric clip, entropy collapses
            entropy = ablation.plot_learning_curves(sweep.runs, sweep.history, key, metric="entropy", hue=others)
            sections += [f"Policy entropy during GRPO (nats per token):\n\n"
                         f"![entropy]({_save(entropy, out / f'entropy_{key}.png')})\n"]
        if ablation.costs_differ(sweep.runs, sweep.history, key):  # a cheaper arm may win per second
            clock = ablation.plot_learning_curves(sweep.runs, sweep.history, key, hue=others, x="train_seconds")
            clock_png = _save(clock, out / f"learning_curves_{key}_seconds.png")
            sections += [f"Against training time (the values of {key} differ in cost):\n\n"
                         f"![learning curves against time]({clock_png})\n"]
    return sections


def contrast_section(key: str, contrasts: pd.DataFrame) -> list[str]:
    if contrasts.empty:
        return [f"\nNo contrast of {key}: fewer than two of its arms have a finished run.\n"]
    return [f"\nContrasts of the final value, each {key} against the first and against the one before it. "
            + contrast.describe(contrasts), _table(contrasts)]


def equal_cost_section(sweep: Sweep, table: pd.DataFrame, key: str, others: list[str]) -> list[str]:
    at_cost = compute.equal_cost_contrasts(table, sweep.history, key, ablation.arms(table[key]), others)
    return [compute.DESCRIPTION, _table(at_cost)] if len(at_cost) else []


def few_seeds(summary: pd.DataFrame, enough: int = 3) -> list[str]:
    """A warning when any row rests on fewer than `enough` seeds: its interval is over prompts
    (and those few seeds) only, and says little about another seed."""
    thin = summary[summary.runs < enough]
    if thin.empty:
        return []
    return [f"\n**Warning:** {len(thin)} of {len(summary)} rows rest on fewer than {enough} seeds "
            f"({', '.join(str(n) for n in sorted(set(thin.runs)))}); their intervals leave out most of the "
            "seed-to-seed spread.\n"]


def live_groups(sweep: Sweep, out: Path) -> list[str]:
    points = live.measured_live_points(sweep.runs, sweep.history)
    if points.empty:
        return []
    png = _save(live.plot_live_groups(sorted(points.K.unique()), points), out / "live_groups.png")
    return ["## Live groups\n", "Measured live fraction by K and training pass-rate bin (runs on the gold reward), "
            "against 1 - p^K - (1-p)^K at the bin's mean p (`theory`) and against the mixture E_i[P_live(p_i, K)] "
            "(`theory_mixture`): each step's p spread over prompts as its run's latest held-out evaluation found "
            "them (a Beta fitted to per-prompt results; NaN where none were logged). Prompts of mixed difficulty "
            "leave fewer groups live than their mean p predicts (P_live is concave in p):\n",
            _table(points), f"\n![live groups]({png})\n"]


def overoptimisation(sweep: Sweep, out: Path) -> list[str]:
    proxy = overopt.proxy_runs(sweep)
    if proxy.points.empty:
        trained = "task.reward" in sweep.runs and sweep.runs["task.reward"].isin(overopt.PROXIES).any()
        return ["## Reward over-optimisation\n", "Runs trained on a proxy, but none finished with a KL "
                "and a gold measured (a pruned or failed run has no end to turn at).\n"] if trained else []
    rl, by, bon = proxy.points, proxy.by, proxy.best_of_n
    png = _save(overopt.plot_overoptimisation(rl, by, bon), out / "overoptimisation.png")
    sections = ["## Reward over-optimisation\n",
                "Gains over the GRPO stage's start against d = sqrt(KL); fits of Gao et al. 2022, "
                "RL: R(d) = d (alpha - beta log d), best-of-n: R(d) = d (alpha - beta d):\n",
                _table(overopt.fit_table(rl, by, bon)), f"\n![over-optimisation]({png})\n",
                "Where each run's gold gain peaked, and how gold and proxy moved from there to the end:\n",
                _table(overopt.turning_points(rl, by))]
    if bon is not None:
        sections += ["Best-of-n from the GRPO stage's initial policy, ranked by the proxy:\n", _table(bon)]
    return sections


def cold_start_section(sweep: Sweep, out: Path) -> list[str]:
    """What the cold start's size (0: none, GRPO on the base) gave GRPO: pass rate at its start and end,
    steps to a threshold (half the best size's final mean), and the live fraction at its start."""
    table = cold_start.start_and_end(sweep.runs, sweep.history)
    if table.empty:
        return []
    both, others = cold_start.summary(table), cold_start.other_keys(table, sweep.runs)
    against = cold_start.against_none(table, others)
    threshold = round(0.5 * both.mean_end.max(), 3)
    png = _save(cold_start.plot_start_and_end(table), out / "cold_start.png")
    sections = ["## Cold start\n", "Held-out gold pass@1 at GRPO's start (after the cold start, or the base with "
                "none) and at its end, mean and 95% interval over seeds and held-out prompts:\n", _table(both),
                *few_seeds(both), f"\n![cold start]({png})\n",
                "What GRPO added to its start, end - start, paired within each run (its seed, the same held-out "
                "prompts at both evaluations), Holm-corrected over the rows:\n", _table(cold_start.climbs(table, others)),
                f"\nGRPO's end, each size against {'none' if 0 in set(table[cold_start.EXAMPLES]) else 'the smallest'} "
                "and against the size below it. " + contrast.describe(against), _table(against)]
    if threshold > 0:  # chosen from the sweep's own results, and said so
        sections += [f"GRPO steps to reach held-out gold pass@1 >= {threshold} (half the best size's final mean), at "
                     "the evaluations every eval.eval_every steps; failed or pruned runs are left out (see above):\n",
                     _table(cold_start.steps_to_threshold(table, sweep.history, threshold))]
    points = cold_start.live_at_start_points(sweep.runs, sweep.history)
    if len(points):
        png = _save(cold_start.plot_live_at_start(points), out / "cold_start_live.png")
        sections += ["Live groups over GRPO's first 5 steps (mean over seeds, 95% interval over seeds and steps) "
                     "against 1 - p^K - (1-p)^K at each seed's training pass rate p over those steps (mean, min and "
                     "max over seeds), beside the held-out pass rate at GRPO's start. With prompts of mixed "
                     "difficulty fewer groups are live than the mean pass rate predicts (P_live is concave in p): "
                     "`theory_mixture` is E_i[P_live(p_i, K)] at the same training pass rate, its prompts spread as a Beta "
                     "fitted to the held-out prompts' results at GRPO's start (a beta-binomial):\n",
                     _table(cold_start.live_at_start(points)), f"\n![live at start]({png})\n"]
    return sections


def bayesian(sweep: Sweep, sweep_dir: Path, out: Path, storage: str | None = None) -> list[str]:
    """An Optuna study's section: from its storage when it is there, else rebuilt from the runs.
    Each figure's data is written beside it as CSV."""
    stored = study.open_study(sweep_dir, storage, study.spec(sweep.runs)["study_name"])
    source = "its storage" if stored is not None else "its runs (the study's storage is gone)"
    found = stored if stored is not None else study.study_from_runs(sweep)
    name = study.objectives(found)[0]
    no_importances = study.why_no_importances(found)
    tables = {"history": study.history(found), "intermediate": study.intermediate(found)}
    figures = {"history": study.plot_history(found), "parallel": study.plot_parallel(found),
               "slices": study.plot_slices(found)}
    if no_importances is None:
        tables["importances"] = study.importances(found)
        figures["importances"] = study.plot_importances(tables["importances"])
    if len(tables["intermediate"]):  # none in a study of several objectives: Optuna takes no reports there
        figures["intermediate"] = study.plot_intermediate(tables["intermediate"], name)
    if len(found.directions) > 1:
        tables["pareto"] = study.pareto(found)
        figures["pareto"] = study.plot_pareto(found, tables["pareto"])
    for key, table in tables.items():
        table.to_csv(out / f"study_{key}.csv", index=False)
    pngs = {key: _save(fig, out / f"study_{key}.png") for key, fig in figures.items()}
    counts = tables["history"].state.value_counts().to_dict()
    sections = ["## Bayesian search\n",
                f"An Optuna study of {len(tables['history'])} trials ({counts}), read from {source}. Its arms are "
                "not controlled (every knob moves at once), so it has no per-key ablation tables: what mattered "
                f"for {name} is read from the importances.\n",
                "### Importances (mean and sd over estimator seeds)\n",
                *([f"None: {no_importances}.\n"] if no_importances else
                  [_table(tables["importances"]), f"\n![importances]({pngs['importances']})\n"]),
                f"### Optimisation history, best so far\n\n![history]({pngs['history']})\n",
                "### Intermediate values; pruned trials marked where they stopped\n\n" +
                (f"![intermediate]({pngs['intermediate']})\n" if "intermediate" in pngs else
                 "None: Optuna takes intermediate values (and prunes) in studies of one objective only.\n"),
                f"### Parallel coordinates\n\n![parallel]({pngs['parallel']})\n",
                f"### Slices: {name} against each knob\n\n![slices]({pngs['slices']})\n"]
    sections[2:2] = study_noise(sweep, tables["history"], name)  # beside the intro, before any figure
    if "pareto" in tables:
        front = tables["pareto"][tables["pareto"].on_front]
        sections += ["### Pareto front\n", _table(front), f"\n![pareto]({pngs['pareto']})\n"]
    return sections


def study_noise(sweep: Sweep, history: pd.DataFrame, name: str) -> list[str]:
    """A warning when a pass-rate objective varies across the finished trials no more than one
    trial's own held-out estimate does (its binomial standard error): importances, slices and the
    best trial then rank noise."""
    values = history.value.dropna()
    runs = sweep.runs[sweep.runs.stage == FINAL_STAGE]
    if "pass@1" not in name or len(values) < 2 or "eval.num_prompts" not in runs:
        return []
    completions = int((runs["eval.num_prompts"] * runs["eval.num_samples"]).min())
    mean = values.mean()
    standard_error = (mean * (1 - mean) / completions) ** 0.5
    if values.std(ddof=1) > standard_error:
        return []
    return [f"\n**Warning:** {name} varies across the finished trials (sd {values.std(ddof=1):.3g}) no more than "
            f"one trial's held-out estimate does (binomial SE {standard_error:.3g} over {completions} completions): "
            "the importances, slices and best trial here rank noise. Evaluate on more held-out prompts "
            "(eval.num_prompts, eval.num_samples) or train longer.\n"]


def write_report(sweep_dir, out_dir=None, storage: str | None = None) -> Path:
    """Write the plots and report.md; return the report's path."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    keys = ablation.swept(sweep.runs)
    searched = study.is_bayesian(sweep.runs)
    sections = [*overview(sweep, sweep_dir.name, keys),
                *(bayesian(sweep, sweep_dir, out, storage) if searched else ablations(sweep, keys, out)),
                *sequential.section(sweep_dir),
                *live_groups(sweep, out), *overoptimisation(sweep, out)]
    if cold_start.is_cold_start_sweep(sweep.runs):
        sections += cold_start_section(sweep, out)
    sections += write_raw(sweep, keys, out)
    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="a sweep directory (or one run's)")
    parser.add_argument("--out", help="where to write (default: SWEEP/report)")
    parser.add_argument("--storage", help="an Optuna sweep's storage URL (default: SWEEP/optuna.db if there; "
                                          "without one, the study is rebuilt from its runs)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.sweep, args.out, args.storage)
    except FileNotFoundError as error:
        print(f"analysis.report: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
