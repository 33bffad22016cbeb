"""The recipe's stages, each its own tracked run, each saving what the next one loads: one compute
function per stage type (harness.stages declares the types and the default recipe's instances;
harness.runner resumes, caches and tracks around every one).

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
from pathlib import Path

import torch

from harness.cache import stage_key
from harness.checkpoint import StageCheckpoints, prune_finished
from harness.config import Config, GRPOConfig
from harness.distributed import from_writer, is_writer, whole_state
from harness.evaluate import Evaluator
from harness.grpo import Evaluation, train_grpo
from harness.models import base_model, load_policy, save_policy
from harness.reward_model import LearnedProxy, classifier_from_policy, judge, labelled_samples, train_reward_model
from harness.rewards.pool import RewardPool
from harness.rewards.reward import Reward
from harness.rollout import RolloutEngine, make_engine
from harness.rollout.base import SamplingParams
from harness.runner import StageRunner, closing_on_failure
from harness.sampling import GroupSampler
from harness.seed_set import load_seed, rejection_sample, save_seed
from harness.sft import Schedule, finetune
from harness.stages import CHECKPOINT, START, STAGE_TYPES, stage_seed, stream_seed, trains_on
from harness.store import SUMMARY, read_json, write_json
from harness.tasks import ProblemStream, heldout_problems, kept_out, make_task

log = logging.getLogger(__name__)
START_FILE = "start.json"  # a START cache entry: the final GRPO stage's first evaluation and best-of-n samples


class SeedTooSmall(RuntimeError):
    pass


class Pipeline(StageRunner):
    def __init__(self, cfg: Config, run_dir: Path, on_eval=None):
        """`on_eval(step, metrics)` sees the final stage's evaluations (a sweeper's hook)."""
        super().__init__(cfg, run_dir, on_eval)
        if cfg.threads:  # set by to_config; a launcher's own limit (joblib's) must not change the numbers
            torch.set_num_threads(cfg.threads)
        self.task = make_task(cfg.task)
        self.heldout = heldout_problems(self.task, cfg.eval.num_prompts, cfg.eval.seed)
        heldout_keys = kept_out(self.task, self.heldout)
        # One stream of training problems per stage, each with its own seed.
        self.streams = {name: ProblemStream(self.task, stream_seed(cfg, name), heldout_keys) for name in self.order}
        self.base = from_writer(lambda: base_model(cfg.model, self.task))  # rank 0 builds the tiny one, if needed
        self.pool = RewardPool(cfg.task.reward_workers, cfg.task.reward_timeout, cfg.task.reward_memory_gb)
        self.reward = Reward.for_task(self.pool, cfg.task)  # gold and the task's proxy, measured; gold trains

    def run(self) -> dict:
        """The recipe: each stage in run order, computed by its type's function unless resumed or cached."""
        if self.cfg.resume:
            self.summary = read_json(self.run_dir / SUMMARY)
        elif is_writer():  # a directory used before: nothing of that run may pass for this one's
            (self.run_dir / SUMMARY).unlink(missing_ok=True)
        with self.pool:
            for name in self.order:
                self.stage(name, getattr(self, STAGE_TYPES[self.graph[name].type].compute))
        prune_finished(self.run_dir, self.order, self.cfg.checkpoint.keep)
        return self.summary

    # -- one compute function per stage type (harness.stages.STAGE_TYPES) ---------------------
    def seed_set(self, name: str) -> None:
        """Rejection-sample verified outputs of the instance's start."""
        tracker = self.begin(name)
        model, tokenizer = self._load(self.output(self.graph[name].start))
        engine = make_engine(self.cfg.rollout, model, tokenizer, stage_seed(self.cfg, name))
        with closing_on_failure(tracker, engine):
            rows = rejection_sample(engine, self.reward, self.streams[name],
                                    cfg=getattr(self.cfg, self.graph[name].config), rollout_cfg=self.cfg.rollout,
                                    tracker=tracker)
        if is_writer():
            save_seed(rows, tracker.dir / STAGE_TYPES["seed"].output)
        tracker.finish({"seed/size": len(rows)})
        self.record(name, {"seed/size": len(rows)})

    def sft(self, name: str) -> None:
        """Fine-tune the instance's start (the base) on cold_start_size examples of its data."""
        cfg, sft_cfg, seed = self.cfg, getattr(self.cfg, self.graph[name].config), stage_seed(self.cfg, name)
        tracker = self.begin(name)
        model, tokenizer = self._load(self.output(self.graph[name].start))
        engine = make_engine(cfg.rollout, model, tokenizer, seed)
        evaluator = self._evaluator(self._frozen_copy(model), self.reward)
        with closing_on_failure(tracker, engine):
            examples = self._cold_start_examples(name, sft_cfg)
            initial = evaluator(model, engine)
            self.record_base(initial)
            tracker.log_eval(0, initial)
            finetune(model, tokenizer, examples, Schedule(sft_cfg.num_steps, sft_cfg.batch_size, sft_cfg.learning_rate),
                     seed=seed, log=tracker.log, desc=name)
            engine.sync_weights()
            result = evaluator(model, engine)
        tracker.log_eval(sft_cfg.num_steps, result)
        self._save(model, tokenizer, tracker.dir)
        tracker.finish({**result, "sft/examples": len(examples)})
        self.record(name, result)

    def reward_model(self, name: str) -> None:
        """A classifier from the instance's start, on gold labels of that policy's completions."""
        cfg, rm_cfg, seed = self.cfg, getattr(self.cfg, self.graph[name].config), stage_seed(self.cfg, name)
        policy = self.output(self.graph[name].start)
        tracker = self.begin(name)
        model, tokenizer = self._load(policy)
        engine = make_engine(cfg.rollout, model, tokenizer, seed)
        with closing_on_failure(tracker, engine):
            train, heldout = labelled_samples(engine, self.reward, self.streams[name], self.heldout, rm_cfg,
                                              cfg.rollout)
            classifier = classifier_from_policy(policy, tokenizer, cfg.model.dtype, cfg.device, seed)
            train_reward_model(classifier, tokenizer, train, rm_cfg, seed=seed, log=tracker.log)
            result = judge(LearnedProxy(classifier, tokenizer), train, heldout)
        tracker.log_eval(rm_cfg.steps, result)
        self._save(classifier, tokenizer, tracker.dir)
        tracker.finish(result)
        self.record(name, result)

    def grpo(self, name: str) -> None:
        """GRPO from the instance's start on its reward; with `learned`, its reward model is the proxy."""
        cfg, spec, reward = self.cfg, self.graph[name], trains_on(self.cfg, name)
        learned = LearnedProxy.load(self.output(spec.reward_model), cfg.model.dtype, cfg.device) \
            if reward == "learned" else None
        self._grpo_stage(name, self.output(spec.start), getattr(cfg, spec.config),
                         Reward.for_task(self.pool, cfg.task, reward, learned))

    # -- helpers ----------------------------------------------------------------------------
    def _grpo_stage(self, stage: str, start: Path, grpo_cfg: GRPOConfig, reward: Reward) -> None:
        """GRPO from `start` with the stage's own knobs (grpo_cfg: cfg.explore or cfg.grpo) and reward."""
        cfg = self.cfg
        checkpoints = StageCheckpoints(self.run_dir / stage, cfg.checkpoint.every, self.streams[stage], cfg.resume)
        resumed = checkpoints.resumed
        if resumed is None:
            checkpoints.clear()  # an earlier attempt's, which nobody asked to resume
        tracker = self.begin(stage, resume_step=None if resumed is None else resumed.step)
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
                self.record_base(metrics)
            return metrics

        with closing_on_failure(tracker, engine):
            first = None
            if stage == self.final and resumed is None:
                first = self._grpo_start(evaluator, model, engine, best_of_n=reward.has_proxy)
                if start == self.base:
                    self.record_base(first["eval"])
                if first["best_of_n"]:
                    tracker.log_rows("best_of_n", first["best_of_n"])
            evaluation = Evaluation(evaluate, cfg.eval.eval_every, self.on_eval if stage == self.final else None,
                                    at_start=None if first is None else first["eval"])
            groups = GroupSampler(self.streams[stage], engine, reward, SamplingParams.of(cfg.rollout))
            result = train_grpo(model, groups, cfg=grpo_cfg, evaluation=evaluation, tracker=tracker,
                                reference=frozen if grpo_cfg.beta > 0 else None, checkpoints=checkpoints,
                                parallel=cfg.trial.data_parallel)
            self._save(model, tokenizer, tracker.dir)  # before the engine closes: a vLLM engine takes the ranks' group
        tracker.finish(result)
        self.record(stage, result)
        checkpoints.clear()

    def _grpo_start(self, evaluator: Evaluator, model, engine: RolloutEngine, best_of_n: bool) -> dict:
        """The GRPO stage's start as the evaluator sees it: the held-out evaluation at step 0 and the
        best-of-n samples (none without a proxy to rank them by). They depend on the start policy and
        eval.*, not on grpo.*, so the trials of a sweep from one cold start share them through the stage
        cache (entry `grpo_start`)."""
        key_inputs = self.key_inputs(START)
        with self.cache_entry(START, stage_key(key_inputs)) as entry, tempfile.TemporaryDirectory() as scratch:
            cached = from_writer(lambda: read_json(entry.folder / START_FILE)
                                 if entry is not None and entry.manifest() is not None else None)
            if cached is not None:
                return cached
            # Evaluation samples from its own random stream: computing this moves no training randomness.
            at_start = {"eval": evaluator(model, engine),
                        "best_of_n": evaluator.best_of_n_samples(engine) if self.cfg.eval.best_of_n and best_of_n
                        else []}
            if entry is not None:
                write_json(Path(scratch) / START_FILE, at_start)
                entry.store(Path(scratch), {"run": self.run_name, "run_dir": str(self.run_dir), "inputs": key_inputs})
            return at_start

    def _cold_start_examples(self, name: str, cfg) -> list[tuple[str, str]]:
        """cold_start_size examples: the solver's, or drawn from the rows of the instance's seed sets
        together (sft.seed_path where the run makes none)."""
        rng = random.Random(stage_seed(self.cfg, name))
        if cfg.source == "solver":
            return [(p.prompt, self.task.solve(p, rng)) for p in self.streams[name].take(cfg.cold_start_size)]
        sets = [path for path in map(self.output, self.graph[name].data) if path is not None] \
            or [Path(cfg.seed_path)]
        rows = [row for path in sets for row in load_seed(path)]
        if len(rows) < cfg.cold_start_size:
            raise SeedTooSmall(
                f"sft.cold_start_size={cfg.cold_start_size}: the seed set holds only {len(rows)} verified examples "
                f"(raise seed_set.max_rounds or explore.steps, or lower sft.cold_start_size)")
        return [(r["prompt"], r["completion"]) for r in rng.sample(rows, cfg.cold_start_size)]

    def _evaluator(self, initial, reward: Reward) -> Evaluator:
        return Evaluator(reward, self.heldout, self.cfg.eval, self.cfg.rollout,
                         initial_policy=initial if self.cfg.eval.kl_to_initial else None)

    def _load(self, path: Path, weights=None):
        return load_policy(path, self.cfg.model.dtype, self.cfg.device, weights)

    @staticmethod
    def _frozen_copy(model):
        frozen = copy.deepcopy(model).eval()
        frozen.requires_grad_(False)
        return frozen

    @staticmethod
    def _save(model, tokenizer, stage_dir: Path) -> None:
        weights = whole_state(model)  # every rank takes part (FSDP gathers the shards), rank 0 writes them once
        if not is_writer():
            return
        shutil.rmtree(stage_dir / CHECKPOINT, ignore_errors=True)  # never write into an older copy's files
        save_policy(model, tokenizer, stage_dir / CHECKPOINT, weights)
