"""Does SmolLM2-135M-Instruct learn here? Run `experiment=smollm2` and compare its held-out gold
pass@1 before the cold start (the base), after it (SFT) and after GRPO, prompt by prompt.

    python bench/smollm2_learning.py [key=value ...]

Every stage is evaluated on the same held-out prompts, so each gain is a paired difference: its
standard error is the spread of the per-prompt differences over the square root of the number of
prompts (the samples of one prompt are not independent of each other; the prompts are). The
target (issue 17): cold start plus GRPO raises gold pass@1 by at least 3 standard errors, in at
most 30 minutes on 2 cores, with the stage cache off so that nothing is reused. The GRPO stage's own
gain is reported beside it, measured the same way. The standard errors are those of evaluation on
a finite set of prompts, for one training seed: they say nothing of how another seed would do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from scipy import stats
from timing import commit, machine, timed_train  # bench/timing.py: this script's folder is on sys.path

TARGET_SECONDS, TARGET_STANDARD_ERRORS = 30 * 60, 3
PER_PROMPT = "eval/gold_pass@1/per_prompt"


def evaluations(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "eval.jsonl").read_text().splitlines() if PER_PROMPT in line]


def paired_gain(before: list[float], after: list[float]) -> dict:
    """Mean per-prompt gain and its standard error over prompts."""
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a standard error over prompts needs at least 2 held-out prompts, got {n}")
    mean, se = statistics.fmean(diffs), float(stats.sem(diffs))
    return {"gain": round(mean, 4), "se": round(se, 4), "standard_errors": round(mean / se, 2) if se else None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        seconds = timed_train(["experiment=smollm2", "cache.stages=false", f"hydra.run.dir={run_dir}", *args.overrides],
                              quiet_stderr=False)
        sft, grpo = evaluations(run_dir / "sft"), evaluations(run_dir / "grpo")
        status = json.loads((run_dir / "status.json").read_text())
        base_length = json.loads((run_dir / "summary.json").read_text())["base"]["eval/completion_length"]
    base, cold, final = sft[0][PER_PROMPT], sft[-1][PER_PROMPT], grpo[-1][PER_PROMPT]
    pass_at_1 = {"base": sum(base) / len(base), "sft": sum(cold) / len(cold), "grpo": sum(final) / len(final)}
    total = paired_gain(base, final)
    met = seconds <= TARGET_SECONDS and (total["standard_errors"] or 0) >= TARGET_STANDARD_ERRORS
    print(json.dumps({
        "seconds": round(seconds, 1), "prompts": len(base),
        "gold_pass@1": {k: round(v, 4) for k, v in pass_at_1.items()},
        "cold_start_plus_grpo": total, "cold_start": paired_gain(base, cold), "grpo": paired_gain(cold, final),
        "grpo_curve": [(e["step"], round(e["eval/gold_pass@1"], 4)) for e in grpo],
        "within_target": met,
        "stage_seconds": {k.split("/")[1]: round(v, 1) for k, v in status.items() if k.endswith("/seconds")},
        "base_completion_length": round(base_length, 2), "commit": commit(), "machine": machine(),
        "overrides": args.overrides}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
