"""Regenerate one entry of the results gallery: its sweep, its report, and where it came from.

    python docs/results/regenerate.py ENTRY [key=value ...]

Runs the entry's preset command (a Hydra multirun, two joblib jobs of one torch thread each: the
numbers do not depend on the launcher) into outputs/gallery/ENTRY, adds seeds where the entry has a
plan for it (sweeps.resolve, its contrasts named in RESOLVE before the sweep ran), then its report into
docs/results/ENTRY/, beside provenance.json: the exact commands, the commit (and whether the tree
had uncommitted changes), the machine, the date and the sweep's wall-clock. Extra key=value
overrides go to the sweep and are recorded with it. The entry's README.md (what was measured and
what it means) is written by hand from the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = {  # entry -> the preset overrides of its one command
    "dapo": ["sweep=dapo"],
    "rollout_budget": ["experiment=grpo_from_base", "sweep=rollout_budget"],
    "overoptimisation_proxy": ["experiment=overoptimisation", "sweep=proxy_rules"],
    "overoptimisation_learned": ["experiment=overoptimisation", "sweep=learned_proxy"],
    "cold_start": ["experiment=cold_start_vs_rl", "sweep=cold_start"],
    "letter_counting": ["experiment=letter_counting_smollm2", "sweep=cold_start_smollm2"],
}
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]
# entry -> its seeds-until-resolved plan (sweeps.resolve), named before the sweep ran: the claims it tests
RESOLVE = {
    "dapo": ["--max-seeds", "6", "--batch", "2", "--contrast", "2 + clip-higher - 1 naive GRPO",
             "--contrast", "4 + dynamic sampling - 3 + token-level loss", "--contrast", "4 + dynamic sampling - 1 naive GRPO"],
    "rollout_budget": ["--max-seeds", "6", "--batch", "3", "--contrast", "4 K=16 x 8 prompts - 1 K=2 x 64 prompts"],
    "overoptimisation_proxy": ["--max-seeds", "6", "--batch", "3", "--contrast", "4 - 1"],
    "overoptimisation_learned": ["--max-seeds", "6", "--batch", "3", "--contrast", "grpo.beta=0: 20000 - 2000",
                                 "--contrast", "reward_model.train_size=20000: 0.04 - 0"],
    "cold_start": ["--max-seeds", "6", "--batch", "3", "--contrast", "6 n=1000 - 1 none", "--contrast", "5 n=300 - 1 none"],
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def regenerate(entry: str, overrides: list[str]) -> dict:
    sweep_dir, out = ROOT / "outputs" / "gallery" / entry, ROOT / "docs" / "results" / entry
    train = [sys.executable, "-m", "harness.train", "-m", *ENTRIES[entry], *PARALLEL, *overrides,
             f"hydra.sweep.dir={sweep_dir.relative_to(ROOT)}"]
    report = [sys.executable, "-m", "analysis.report", str(sweep_dir.relative_to(ROOT)), "--out",
              str(out.relative_to(ROOT))]
    # What made it, read before the run: the report it writes lands in the tree.
    commit, uncommitted = _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain"))
    resolve = [sys.executable, "-m", "sweeps.resolve", str(sweep_dir.relative_to(ROOT)), *RESOLVE.get(entry, [])]
    start = time.perf_counter()
    subprocess.run(train, cwd=ROOT, check=True)
    if entry in RESOLVE:  # more seeds while the named contrasts are open, within the plan's budget
        subprocess.run(resolve, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    subprocess.run(report, cwd=ROOT, check=True)
    provenance = {
        "command": " ".join(["python", *train[1:]]), "report_command": " ".join(["python", *report[1:]]),
        **({"resolve_command": subprocess.list2cmdline(["python", *resolve[1:]])} if entry in RESOLVE else {}),
        "commit": commit, "uncommitted_changes": uncommitted,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sweep_wall_clock_s": round(seconds, 1)}
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("entry", choices=sorted(ENTRIES))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(json.dumps(regenerate(args.entry, args.overrides), indent=2))


if __name__ == "__main__":
    main()
