"""The recipe as stages, each its own tracked run, each saving what the next one loads.

  explore  GRPO on the base, mining for rare good trajectories     -> explore/checkpoint
  seed     rejection-sample verified outputs of the explorer        -> seed/seed.jsonl
  sft      cold-start the *base* on cold_start_size seed examples    -> sft/checkpoint
           (or on the task solver's demonstrations: sft.source=solver)
  reward_model  with task.reward=learned only: a reward model on gold labels of the
           cold-started policy's completions, the proxy GRPO trains on -> reward_model/checkpoint
  grpo     GRPO for real, from the cold-started policy               -> grpo/checkpoint
           (first sampling eval.best_of_n completions per held-out prompt -> grpo/best_of_n.jsonl)

Any stage can be skipped (`pipeline.stages=[sft,grpo]`) or run alone from a checkpoint
(`pipeline.stages=[grpo] model.path=...`). With `resume=true`, stages that finished are taken as
they are and a GRPO stage killed midway goes on from its last resume state (harness.checkpoint).
Every stage comes from the stage cache (harness.cache) when an identical config made it before:
a sweep over grpo.* computes its cold start once per seed, and a trial that repeats another's
settings costs nothing.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import torch
from optuna import TrialPruned

from harness.cache import Entry, StageCache, base_key, stage_inputs, stage_key
from harness.checkpoint import StageCheckpoints, prune_finished
from harness.config import STAGE_ORDER, STAGES, Config, GRPOConfig, stage_seed
from harness.evaluate import Evaluator
from harness.faults import TrialSuperseded
from harness.grpo import Evaluation, train_grpo
from harness.models import base_model, load_policy, save_policy
from harness.reward_model import LearnedProxy, classifier_from_policy, judge, labelled_samples, train_reward_model
from harness.resume import recorded_config
from harness.rewards.pool import RewardPool
from harness.rewards.reward import Reward
from harness.rollout import RolloutEngine, make_engine
from harness.seed_set import load_seed, rejection_sample, save_seed
from harness.sft import finetune
from harness.sources import content_digest
from harness.tasks import ProblemStream, heldout_problems, kept_out, make_task
from harness.tracking import StageTracker, read_json, read_jsonl, scalars, write_json

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"
OUTPUTS = {"explore": CHECKPOINT, "seed": "seed.jsonl", "sft": CHECKPOINT, "reward_model": CHECKPOINT,
           "grpo": CHECKPOINT}
START = "start.json"  # a grpo_start cache entry: the GRPO stage's first evaluation and best-of-n samples


class SeedTooSmall(RuntimeError):
    pass


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


class Pipeline:
    def __init__(self, cfg: Config, run_dir: Path, on_eval: Optional[Callable[[int, dict], None]] = None):
        """`on_eval(step, metrics)` sees the final GRPO stage's evaluations (a sweeper's hook)."""
        self.cfg, self.run_dir, self.on_eval = cfg, Path(run_dir), on_eval
        if cfg.threads:  # set by to_config; a launcher's own limit (joblib's) must not change the numbers
            torch.set_num_threads(cfg.threads)
        self.run_name = cfg.run_name or self.run_dir.name
        self.task = make_task(cfg.task)
        self.heldout = heldout_problems(self.task, cfg.eval.num_prompts, cfg.eval.seed)
        heldout_keys = kept_out(self.task, self.heldout)
        # One stream of training problems per stage, each with its own seed.
        self.streams = {stage: ProblemStream(self.task, stage_seed(cfg, stage) * len(STAGES) + i, heldout_keys)
                        for i, stage in enumerate(STAGES)}
        # The reward model's: a seed no recipe stage's (an int) can equal, and theirs as they were before it.
        self.streams["reward_model"] = ProblemStream(self.task, f"reward_model/{stage_seed(cfg, 'reward_model')}",
                                                     heldout_keys)
        self.base = base_model(cfg.model, self.task)
        self.cache = StageCache(cfg.cache.stages, cfg.cache.dir, cfg.cache.max_size_gb)
        self.pool = RewardPool(cfg.task.reward_workers, cfg.task.reward_timeout, cfg.task.reward_memory_gb)
        self.reward = Reward.for_task(self.pool, cfg.task)  # gold and the task's proxy, measured; gold trains
        self.summary: dict = {}
        self.cost: dict = {}  # cost/<stage>/{seconds,reused,steps,rollout_tokens}: for status.json and the study

    def run(self) -> dict:
        """The recipe: each stage a function of its inputs, writing its output; a stage left out
        of pipeline.stages passes its input on (the base, or sft.seed_path)."""
        if self.cfg.resume:
            self.summary = read_json(self.run_dir / "summary.json")
        else:  # a directory used before: nothing of that run may pass for this one's
            (self.run_dir / "summary.json").unlink(missing_ok=True)
        base, seed_path = self.base, Path(self.cfg.sft.seed_path) if self.cfg.sft.seed_path else None
        with self.pool:
            explorer = self._stage("explore", self.explore, base) or base
            seed = self._stage("seed", self.seed_set, explorer) or seed_path
            policy = self._stage("sft", self.sft, base, seed) or base
            reward_model = self._stage("reward_model", self.reward_model, policy)
            self._stage("grpo", self.grpo, policy, reward_model)
        prune_finished(self.run_dir, self.stages, self.cfg.checkpoint.keep)
        return self.summary

    @property
    def stages(self) -> list[str]:
        """The stages this run goes through, in order: pipeline.stages, and the reward model's
        before GRPO when GRPO trains on it."""
        stages, learned = self.cfg.pipeline.stages, self.cfg.task.reward == "learned"
        return [s for s in STAGE_ORDER if s in stages or (s == "reward_model" and learned and "grpo" in stages)]

    # -- stages ---------------------------------------------------------------------------
    def explore(self, base: Path) -> None:
        self._grpo_stage("explore", base, self.cfg.explore, Reward.for_task(self.pool, self.cfg.task,
                                                                             self.cfg.explore.reward))

    def seed_set(self, explorer: Path) -> None:
        tracker = self._begin("seed")
        model, tokenizer = self._load(explorer)
        engine = make_engine(self.cfg.rollout, model, tokenizer, stage_seed(self.cfg, "seed"))
        with closing_on_failure(tracker, engine):
            rows = rejection_sample(engine, self.reward, self.streams["seed"], cfg=self.cfg.seed_set,
                                    rollout_cfg=self.cfg.rollout, tracker=tracker)
        save_seed(rows, tracker.dir / OUTPUTS["seed"])
        tracker.finish({"seed/size": len(rows)})
        self._record("seed", {"seed/size": len(rows)})

    def sft(self, base: Path, seed: Path | None) -> None:
        cfg = self.cfg
        tracker = self._begin("sft")
        model, tokenizer = self._load(base)
        engine = make_engine(cfg.rollout, model, tokenizer, stage_seed(cfg, "sft"))
        evaluator = self._evaluator(self._frozen_copy(model), self.reward)
        with closing_on_failure(tracker, engine):
            examples = self._cold_start_examples(seed)
            initial = evaluator(model, engine)
            self._record_base(initial)
            tracker.log_eval(0, initial)
            finetune(model, tokenizer, examples, steps=cfg.sft.num_steps, batch_size=cfg.sft.batch_size,
                     learning_rate=cfg.sft.learning_rate, seed=stage_seed(cfg, "sft"), log=tracker.log, desc="sft")
            engine.sync_weights()
            result = evaluator(model, engine)
        tracker.log_eval(cfg.sft.num_steps, result)
        self._save(model, tokenizer, tracker.dir)
        tracker.finish({**result, "sft/examples": len(examples)})
        self._record("sft", result)

    def reward_model(self, policy: Path) -> None:
        cfg, seed = self.cfg, stage_seed(self.cfg, "reward_model")
        tracker = self._begin("reward_model")
        model, tokenizer = self._load(policy)
        engine = make_engine(cfg.rollout, model, tokenizer, seed)
        with closing_on_failure(tracker, engine):
            train, heldout = labelled_samples(engine, self.reward, self.streams["reward_model"], self.heldout,
                                              cfg.reward_model, cfg.rollout)
            classifier = classifier_from_policy(policy, tokenizer, cfg.model.dtype, cfg.device, seed)
            train_reward_model(classifier, tokenizer, train, cfg.reward_model, seed=seed, log=tracker.log)
            result = judge(LearnedProxy(classifier, tokenizer), train, heldout)
        tracker.log_eval(cfg.reward_model.steps, result)
        self._save(classifier, tokenizer, tracker.dir)
        tracker.finish(result)
        self._record("reward_model", result)

    def grpo(self, policy: Path, reward_model: Path | None) -> None:
        """GRPO from `policy`; with task.reward=learned, `reward_model` is the proxy it trains on."""
        cfg = self.cfg
        learned = LearnedProxy.load(reward_model, cfg.model.dtype, cfg.device) if reward_model is not None else None
        self._grpo_stage("grpo", policy, cfg.grpo, Reward.for_task(self.pool, cfg.task, cfg.task.reward, learned))

    # -- running a stage: resumed, reused from the stage cache, or computed ------------------
    def _stage(self, stage: str, make, *inputs) -> Path | None:
        """Run `make(*inputs)` for `stage` unless it is not in the recipe (None), finished before
        a resume, or in the stage cache; the path of its output."""
        if stage not in self.stages:
            return None
        output = self.run_dir / stage / OUTPUTS[stage]
        if self.cfg.resume and self._finished(stage):
            log.info("resume: the %s stage finished before; going on from its output", stage)
            return output
        started, made = time.perf_counter(), None
        try:
            key_inputs = self._key_inputs(stage)
            with self.cache.entry(stage, stage_key(key_inputs)) as entry:
                made = entry.manifest() if entry is not None else None
                if made is not None:
                    self._reuse(stage, entry, made)
                else:
                    make(*inputs)
                    if entry is not None:
                        entry.store(self.run_dir / stage, {"run": self.run_name, "run_dir": str(self.run_dir),
                                                           "record": self.summary[stage],
                                                           "base": self.summary.get("base"), "inputs": key_inputs})
            return output
        finally:  # a pruned or failed stage has cost something too
            self._count_cost(stage, time.perf_counter() - started, reused=made is not None)

    def _count_cost(self, stage: str, seconds: float, reused: bool) -> None:
        """What the stage cost this run (`cost/<stage>/...`): its wall-clock, whether it was reused,
        and for a GRPO stage its steps and rollout tokens (the stage's own, reused or not)."""
        self.cost[f"cost/{stage}/seconds"] = seconds
        self.cost[f"cost/{stage}/reused"] = reused
        steps = read_jsonl(self.run_dir / stage / "metrics.jsonl") if stage in ("explore", "grpo") else []
        if steps:
            self.cost[f"cost/{stage}/steps"] = steps[-1]["step"]
            self.cost[f"cost/{stage}/rollout_tokens"] = steps[-1]["num_tokens"]

    def _reuse(self, stage: str, entry: Entry, made: dict) -> None:
        """The stage as another run computed it: its files here, its logs sent to W&B, its summary
        marked `reused_from` that run. A sweeper's trial sees a GRPO stage's evaluations as if it
        were computed, and if its pruner stops the trial at one, the stage ends there as it would."""
        log.info("stage cache: the %s stage is %s's (%s)", stage, made["run_dir"], entry.folder)
        tracker = self._begin(stage)
        shutil.rmtree(tracker.dir / CHECKPOINT, ignore_errors=True)  # an earlier attempt's, with files of its own
        entry.restore(tracker.dir, made)
        if made["base"] is not None:
            self._record_base(made["base"])
        pruned = self._pruned_at(tracker.dir) if stage == "grpo" else None
        if pruned is not None:
            step, error = pruned
            shutil.rmtree(tracker.dir / CHECKPOINT)  # a stopped stage saves none
            tracker.adopt(made["run_dir"], {"error": str(error)}, until_step=step,
                          status=f"stopped ({type(error).__name__})")
            raise error
        summary = read_json(tracker.dir / "summary.json")
        tracker.adopt(made["run_dir"], {k: v for k, v in summary.items() if k not in ("status", "reused_from")})
        self._record(stage, made["record"])

    def _pruned_at(self, stage_dir: Path) -> tuple[int, TrialPruned] | None:
        """Report a stored GRPO stage's evaluations to the sweeper's trial, in order, as a computed
        stage would; where its pruner stops the trial, the step and the pruning."""
        if self.on_eval is None:
            return None
        for row in read_jsonl(stage_dir / "eval.jsonl"):
            if row["step"] > 0:  # on_eval sees every evaluation after the start
                try:
                    self.on_eval(row["step"], row)
                except TrialPruned as error:
                    return row["step"], error
        return None

    def _key_inputs(self, stage: str) -> dict:
        """What determines the stage's output: the config it reads and the key of what it starts from."""
        return stage_inputs(stage, self.cfg, self._start_key(stage))

    def _start_key(self, stage: str) -> str:
        """The key of what the stage starts from, beyond the config it reads (STAGE_READS)."""
        stages, cfg = self.cfg.pipeline.stages, self.cfg
        if stage == "seed":
            return stage_key(self._key_inputs("explore")) if "explore" in stages else base_key(cfg)
        if stage == "sft" and cfg.sft.source == "seed":
            return stage_key(self._key_inputs("seed")) if "seed" in stages else content_digest(cfg.sft.seed_path)
        if stage in ("reward_model", "grpo", "grpo_start"):  # the cold-started policy
            policy = stage_key(self._key_inputs("sft")) if "sft" in stages else ""
            if stage != "reward_model" and cfg.task.reward == "learned":  # and the reward model GRPO trains on
                return f"{policy}+{stage_key(self._key_inputs('reward_model'))}"
            return policy
        return ""  # the base, named by the model config the stage reads

    # -- helpers ----------------------------------------------------------------------------
    def _grpo_stage(self, stage: str, start: Path, grpo_cfg: GRPOConfig, reward: Reward) -> None:
        """GRPO from `start` with the stage's own knobs (grpo_cfg: cfg.explore or cfg.grpo) and reward."""
        cfg = self.cfg
        checkpoints = StageCheckpoints(self.run_dir / stage, cfg.checkpoint.every, self.streams[stage], cfg.resume)
        resumed = checkpoints.resumed
        if resumed is None:
            checkpoints.clear()  # an earlier attempt's, which nobody asked to resume
        tracker = self._begin(stage, resume_step=None if resumed is None else resumed.step)
        model, tokenizer = self._load(start, weights=None if resumed is None else resumed.model_dir)
        # The frozen start serves the KL penalty (beta > 0) and the eval KL; with beta = 0 and
        # eval.kl_to_initial = false no second model is loaded at all.
        frozen = None
        if grpo_cfg.beta > 0 or cfg.eval.kl_to_initial:
            frozen = self._frozen_copy(model if resumed is None else self._load(start)[0])
        if resumed is not None:
            log.info("resume: the %s stage goes on after step %d", stage, resumed.step)
        engine = make_engine(cfg.rollout, model, tokenizer, stage_seed(cfg, stage))
        evaluator = self._evaluator(frozen, reward)

        def evaluate() -> dict:
            metrics = evaluator(model, engine)
            if start == self.base:  # the stage's first evaluation is the base's
                self._record_base(metrics)
            return metrics

        with closing_on_failure(tracker, engine):
            first = None
            if stage == "grpo" and resumed is None:
                first = self._grpo_start(evaluator, model, engine, best_of_n=reward.has_proxy)
                if start == self.base:
                    self._record_base(first["eval"])
                if first["best_of_n"]:
                    tracker.log_rows("best_of_n", first["best_of_n"])
            evaluation = Evaluation(evaluate, cfg.eval.eval_every, self.on_eval if stage == "grpo" else None,
                                    at_start=None if first is None else first["eval"])
            result = train_grpo(model, engine, reward, self.streams[stage], cfg=grpo_cfg, rollout_cfg=cfg.rollout,
                                evaluation=evaluation, tracker=tracker,
                                reference=frozen if grpo_cfg.beta > 0 else None, checkpoints=checkpoints)
        self._save(model, tokenizer, tracker.dir)
        tracker.finish(result)
        self._record(stage, result)
        checkpoints.clear()

    def _grpo_start(self, evaluator: Evaluator, model, engine: RolloutEngine, best_of_n: bool) -> dict:
        """The GRPO stage's start as the evaluator sees it: the held-out evaluation at step 0 and the
        best-of-n samples (none without a proxy to rank them by). They depend on the start policy and
        eval.*, not on grpo.*, so the trials of a sweep from one cold start share them through the stage
        cache (entry `grpo_start`)."""
        key_inputs = self._key_inputs("grpo_start")
        with self.cache.entry("grpo_start", stage_key(key_inputs)) as entry, tempfile.TemporaryDirectory() as scratch:
            if entry is not None and entry.manifest() is not None:
                return read_json(entry.folder / START)
            # Evaluation samples from its own random stream: computing this moves no training randomness.
            at_start = {"eval": evaluator(model, engine),
                        "best_of_n": evaluator.best_of_n_samples(engine) if self.cfg.eval.best_of_n and best_of_n
                        else []}
            if entry is not None:
                write_json(Path(scratch) / START, at_start)
                entry.store(Path(scratch), {"run": self.run_name, "run_dir": str(self.run_dir), "inputs": key_inputs})
            return at_start

    def _cold_start_examples(self, seed: Path | None) -> list[tuple[str, str]]:
        cfg = self.cfg.sft
        rng = random.Random(stage_seed(self.cfg, "sft"))
        if cfg.source == "solver":
            return [(p.prompt, self.task.solve(p, rng)) for p in self.streams["sft"].take(cfg.cold_start_size)]
        rows = load_seed(seed)
        if len(rows) < cfg.cold_start_size:
            raise SeedTooSmall(
                f"sft.cold_start_size={cfg.cold_start_size}: the seed set holds only {len(rows)} verified examples "
                f"(raise seed_set.max_rounds or explore.steps, or lower sft.cold_start_size)")
        return [(r["prompt"], r["completion"]) for r in rng.sample(rows, cfg.cold_start_size)]

    def _evaluator(self, initial, reward: Reward) -> Evaluator:
        return Evaluator(reward, self.heldout, self.cfg.eval, self.cfg.rollout,
                         initial_policy=initial if self.cfg.eval.kl_to_initial else None)

    def _begin(self, stage: str, resume_step=None) -> StageTracker:
        """Seed the stage's sampling and start its tracked run (or go on with it after resume_step)."""
        torch.manual_seed(stage_seed(self.cfg, stage))
        return StageTracker(self.run_dir / stage, stage=stage, run_name=self.run_name, config=recorded_config(self.cfg),
                            tracking_cfg=self.cfg.tracking, wandb_dir=self.run_dir, resume_step=resume_step)

    def _finished(self, stage: str) -> bool:
        return stage in self.summary and read_json(self.run_dir / stage / "summary.json").get("status") == "finished"

    def _record(self, key: str, metrics: dict) -> None:
        """The run's summary.json, written as each result comes: what a resumed run starts from."""
        self.summary[key] = scalars(metrics)
        write_json(self.run_dir / "summary.json", self.summary)

    def _record_base(self, metrics: dict) -> None:
        if "base" not in self.summary:
            self._record("base", metrics)

    def _load(self, path: Path, weights=None):
        return load_policy(path, self.cfg.model.dtype, self.cfg.device, weights)

    @staticmethod
    def _frozen_copy(model):
        frozen = copy.deepcopy(model).eval()
        frozen.requires_grad_(False)
        return frozen

    @staticmethod
    def _save(model, tokenizer, stage_dir: Path) -> None:
        shutil.rmtree(stage_dir / CHECKPOINT, ignore_errors=True)  # never write into an older copy's files
        save_policy(model, tokenizer, stage_dir / CHECKPOINT)
