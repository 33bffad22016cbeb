"""Around every stage, whatever its type: resume, the stage cache, cost and tracking. A stage's
compute function (harness.pipeline) only makes its output; `StageRunner.stage` decides whether it
must: a stage finished before a resume is taken as it is, one in the stage cache (harness.cache) is
restored, and only otherwise computed and stored."""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Optional

import torch

from harness.cache import Entry, StageCache, base_key, stage_inputs, stage_key
from harness.config import Config
from harness.distributed import barrier, from_writer, is_writer
from harness.faults import TrialSuperseded
from harness.launch import rejoin_if_left
from harness.resume import recorded_config
from harness.rollout import RolloutEngine
from harness.sources import content_digest
from harness.stages import BASE, START, STAGE_TYPES, final_stage, resolve, run_order, stage_seed, trains_on
from harness.store import EVALS, METRICS, SUMMARY, read_json, read_jsonl, write_json
from harness.tracking import SilentTracker, StageTracker, scalars

log = logging.getLogger(__name__)


@contextmanager
def closing_on_failure(tracker: StageTracker, engine: RolloutEngine):
    """A stage pruned or failed still closes its tracked run, saying why; its engine is freed
    either way (a vLLM engine holds GPU memory the next trial of a sweep needs)."""
    try:
        yield
    except TrialSuperseded:
        raise  # the directory is its retry's now
    except Exception as error:
        tracker.finish({"error": str(error)}, status=f"stopped ({type(error).__name__})")
        raise
    finally:
        engine.close()


class StageRunner:
    base: Path  # the model config's policy, what a stage with no stage before it loads (set by Pipeline)

    def __init__(self, cfg: Config, run_dir: Path, on_eval: Optional[Callable[[int, dict], None]] = None):
        """`on_eval(step, metrics)` sees the final stage's evaluations (a sweeper's hook; it may stop the
        stage by raising)."""
        self.cfg, self.run_dir, self.on_eval = cfg, Path(run_dir), on_eval
        self.graph, self.order, self.final = cfg.pipeline.graph, run_order(cfg), final_stage(cfg)
        self.cache = StageCache(cfg.cache.stages, cfg.cache.dir, cfg.cache.max_size_gb)
        self.summary: dict = {}
        self.cost: dict = {}  # cost/<stage>/{seconds,reused,steps,rollout_tokens}: for status.json and the study

    def stage(self, name: str, make: Callable[[str], None]) -> None:
        """`make(name)` unless the stage finished before a resume or is in the stage cache."""
        if self.cfg.resume and self._finished(name):
            log.info("resume: the %s stage finished before; going on from its output", name)
            return
        started, made = time.perf_counter(), None
        try:
            key_inputs = self.key_inputs(name)
            with self.cache_entry(name, stage_key(key_inputs)) as entry:
                made = from_writer(lambda: entry.manifest() if entry is not None else None)
                if made is not None:
                    self._reuse(name, entry, made)
                else:
                    make(name)
                    if entry is not None:
                        entry.store(self.run_dir / name, {"run": self.run_name, "run_dir": str(self.run_dir),
                                                          "record": self.summary[name],
                                                          "base": self.summary.get("base"), "inputs": key_inputs})
        finally:  # a pruned or failed stage has cost something too
            self._count_cost(name, time.perf_counter() - started, reused=made is not None)
        rejoin_if_left()  # the ranks' group, which a stage's vLLM engine destroys as it shuts down
        barrier()  # what rank 0 wrote is there for every rank's next stage

    def cache_entry(self, name: str, key: str):
        """The stage cache's entry (StageCache.entry), which rank 0 alone holds, decides on and stores."""
        return self.cache.entry(name, key) if is_writer() else nullcontext(None)

    @property
    def run_name(self) -> str:
        return self.cfg.run_name or self.run_dir.name

    def output(self, name: str) -> Optional[Path]:
        """What stands for instance `name`'s output in this run (harness.stages.resolve): its file, the
        base's path, or None for a seed set the run skips."""
        made = resolve(self.cfg, name)
        if made is None or made == BASE:
            return None if made is None else self.base
        return self.run_dir / made / STAGE_TYPES[self.graph[made].type].output

    def key_inputs(self, name: str) -> dict:
        """What determines the stage's output: the config it reads and the key of what it starts from."""
        return stage_inputs(name, self.cfg, self._start_key(name))

    def _start_key(self, name: str) -> str:
        """The keys of what the instance (or START, the final stage's start) loads, beyond its config."""
        spec = self.graph[self.final if name == START else name]
        keys = [self._made_key(spec.start)]
        if spec.type == "sft" and getattr(self.cfg, spec.config).source == "seed":
            keys += [self._made_key(d) for d in spec.data] or [""]
            if not any(keys[1:]) and getattr(self.cfg, spec.config).seed_path:
                keys[1:] = [content_digest(getattr(self.cfg, spec.config).seed_path)]
        if spec.type == "grpo" and trains_on(self.cfg, self.final if name == START else name) == "learned":
            keys.append(self._made_key(spec.reward_model))
        return "+".join(keys)

    def _made_key(self, name: str) -> str:
        made = resolve(self.cfg, name)
        return "" if made is None else base_key(self.cfg) if made == BASE else stage_key(self.key_inputs(made))

    def _count_cost(self, name: str, seconds: float, reused: bool) -> None:
        """What the stage cost this run (`cost/<stage>/...`): its wall-clock, whether it was reused,
        and for a GRPO stage its steps and rollout tokens (the stage's own, reused or not)."""
        self.cost[f"cost/{name}/seconds"] = seconds
        self.cost[f"cost/{name}/reused"] = reused
        steps = read_jsonl(self.run_dir / name / METRICS) if self.graph[name].type == "grpo" else []
        if steps:
            self.cost[f"cost/{name}/steps"] = steps[-1]["step"]
            self.cost[f"cost/{name}/rollout_tokens"] = steps[-1]["num_tokens"]

    def _reuse(self, name: str, entry: Entry, made: dict) -> None:
        """The stage as another run computed it: its files here, its logs sent to W&B, its summary
        marked `reused_from` that run. A final GRPO stage's evaluations go to on_eval as a computed
        one's would, and where it stops the trial, the stage ends there as it would."""
        tracker, writer = self.begin(name), is_writer()
        if writer:  # `entry` is rank 0's
            log.info("stage cache: the %s stage is %s's (%s)", name, made["run_dir"], entry.folder)
            shutil.rmtree(tracker.dir / "checkpoint", ignore_errors=True)  # an earlier attempt's, with files of its own
            entry.restore(tracker.dir, made)
        if made["base"] is not None:
            self.record_base(made["base"])
        stopped = from_writer(lambda: self._stopped_at(tracker.dir)) \
            if name == self.final and self.graph[name].type == "grpo" else None
        if stopped is not None:
            step, error = stopped
            if writer:
                shutil.rmtree(tracker.dir / "checkpoint")  # a stopped stage saves none
            tracker.adopt(made["run_dir"], {"error": str(error)}, until_step=step,
                          status=f"stopped ({type(error).__name__})")
            raise error
        if writer:
            summary = read_json(tracker.dir / SUMMARY)
            tracker.adopt(made["run_dir"], {k: v for k, v in summary.items() if k not in ("status", "reused_from")})
        self.record(name, made["record"])

    def _stopped_at(self, stage_dir: Path) -> tuple[int, Exception] | None:
        """Report a stored stage's evaluations to on_eval, in order, as a computed stage would; where it
        raises (a sweeper's pruner), the step and the error."""
        if self.on_eval is None:
            return None
        for row in read_jsonl(stage_dir / EVALS):
            if row["step"] > 0:  # on_eval sees every evaluation after the start
                try:
                    self.on_eval(row["step"], row)
                except TrialSuperseded:
                    raise  # the directory is its retry's now: nothing is written
                except Exception as error:  # as it would propagate out of a computed stage
                    return row["step"], error
        return None

    def begin(self, name: str, resume_step=None) -> StageTracker:
        """Seed the stage's sampling and start its tracked run (or go on with it after resume_step)."""
        torch.manual_seed(stage_seed(self.cfg, name))
        if not is_writer():
            return SilentTracker(self.run_dir / name, name, self.cfg.tracking.log_completions_every)
        return StageTracker(self.run_dir / name, stage=name, run_name=self.run_name, config=recorded_config(self.cfg),
                            tracking_cfg=self.cfg.tracking, wandb_dir=self.run_dir, resume_step=resume_step)

    def _finished(self, name: str) -> bool:
        return name in self.summary and read_json(self.run_dir / name / SUMMARY).get("status") == "finished"

    def record(self, key: str, metrics: dict) -> None:
        """The run's summary.json, written as each result comes: what a resumed run starts from."""
        self.summary[key] = scalars(metrics)
        if is_writer():
            write_json(self.run_dir / SUMMARY, self.summary)

    def record_base(self, metrics: dict) -> None:
        if "base" not in self.summary:
            self.record("base", metrics)
