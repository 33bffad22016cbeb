"""Where the parallel speed-up goes, and how far the seed alone moves a result.

    python bench/launchers.py [--seeds 0,1,2,3] [--ways serial-all,serial-1,joblib-1] [key=value ...]

The same trials (one per seed; the default recipe unless overridden) run as a Hydra multirun in
up to three ways, with the stage cache off so that every trial computes every stage:

  serial-all  the basic launcher, torch on every core this process may use (threads=0)
  serial-1    the basic launcher, one thread per trial
  joblib-1    two joblib jobs at once, one thread each

serial-1 and joblib-1 compute the same numbers (same `threads`), so their ratio is the parallel
speed-up at equal results. Each way's time is split into the stages' own seconds (cost/<stage>/
seconds in status.json) and the rest: process start, imports, loading the task and the base.
Then the standard deviation of final held-out pass@1 across seeds: the noise floor of a
comparison between arms at this recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from timing import machine, timed_train  # bench/timing.py: this script's folder is on sys.path

WAYS = {"serial-all": ["threads=0"], "serial-1": ["threads=1"],
        "joblib-1": ["threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def run_way(way: str, sweep_dir: Path, seeds: list[int], extra: list[str]) -> dict:
    seconds = timed_train(["-m", f"seed={','.join(map(str, seeds))}", "cache.stages=false",
                           "tracking=disabled", f"hydra.sweep.dir={sweep_dir}", *WAYS[way], *extra])
    records = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/status.json"))]
    stage_seconds = sum(value for record in records for key, value in record.items()
                        if key.startswith("cost/") and key.endswith("/seconds"))
    jobs_at_once = 2 if way.startswith("joblib") else 1
    return {"way": way, "seconds": round(seconds, 1), "stage_seconds": round(stage_seconds, 1),
            # core-seconds outside the stages, per trial: start-up, imports, the task and the base
            "outside_stages_per_trial": round((seconds * jobs_at_once - stage_seconds) / len(records), 1),
            "threads_used": sorted({r.get("threads_used") for r in records}),
            "pass@1": [r.get("eval/gold_pass@1") for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    seeds, ways = [int(s) for s in args.seeds.split(",")], args.ways.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        results = {way: run_way(way, Path(scratch) / way, seeds, args.overrides) for way in ways}
    for row in results.values():
        print(json.dumps(row))
    report = {"machine": machine(), "seeds": seeds}
    if {"serial-1", "joblib-1"} <= results.keys():
        report["speedup_joblib_over_serial_1_thread"] = round(results["serial-1"]["seconds"] /
                                                              results["joblib-1"]["seconds"], 2)
        report["bit_identical_serial_1_vs_joblib_1"] = results["serial-1"]["pass@1"] == results["joblib-1"]["pass@1"]
    if {"serial-all", "joblib-1"} <= results.keys():
        report["speedup_joblib_over_serial_all_threads"] = round(results["serial-all"]["seconds"] /
                                                                 results["joblib-1"]["seconds"], 2)
    for way, row in results.items():
        if len(row["pass@1"]) > 1:
            report[f"seed_std_pass@1 ({way})"] = round(statistics.stdev(row["pass@1"]), 4)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
