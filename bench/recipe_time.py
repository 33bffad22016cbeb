"""Time the README's main command on its defaults and report held-out gold pass@1 by stage.

    python bench/recipe_time.py [--warm] [key=value ...]

By default the base-model cache starts empty, so the time includes the base pre-training that
only a machine's first run pays. The target: the whole recipe in at most 300 s on 2 cores, with
gold pass@1 rising base -> sft -> grpo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from timing import machine, timed_train  # bench/timing.py: this script's folder is on sys.path

TARGET_SECONDS = 300


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm", action="store_true", help="reuse $COLDCLIMB_CACHE instead of an empty cache")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ)
        if not args.warm:
            env["COLDCLIMB_CACHE"] = str(Path(scratch) / "cache")
        run_dir = Path(scratch) / "run"
        seconds = timed_train([f"hydra.run.dir={run_dir}", *args.overrides], env=env, quiet_stderr=False)
        summary = json.loads((run_dir / "summary.json").read_text())
    pass_at_1 = {stage: round(m["eval/gold_pass@1"], 3) for stage, m in summary.items() if "eval/gold_pass@1" in m}
    rising = pass_at_1["base"] < pass_at_1["sft"] < pass_at_1["grpo"]
    print(json.dumps({"seconds": round(seconds, 1), "cache": "warm" if args.warm else "cold",
                      "gold_pass@1": pass_at_1, "grpo_minus_sft": round(pass_at_1["grpo"] - pass_at_1["sft"], 3),
                      "within_target": seconds <= TARGET_SECONDS, "rising": rising,
                      "machine": machine(), "overrides": args.overrides}))
    return 0 if seconds <= TARGET_SECONDS and rising else 1


if __name__ == "__main__":
    sys.exit(main())
