"""task.reward=learned: a reward model trained on gold labels of the GRPO start's completions is the
proxy that GRPO trains on, that evaluation reports and that best-of-n ranks by; trained once per
cold start, N and seed, and cached."""

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness import cache
from harness.config import EvalConfig, GRPOConfig, ModelConfig, RewardModelConfig, RolloutConfig, TaskConfig
from harness.evaluate import Evaluator
from harness.models import build_tiny_model, build_tokenizer, save_policy
from harness.pipeline import Pipeline
from harness.runner import StageRunner
from harness.reward_model import (
    Labelled,
    LearnedProxy,
    auc,
    classifier_from_policy,
    labelled_samples,
    reward_scores,
    train_reward_model,
)
from harness.rollout import HFEngine, SamplingParams
from harness.rewards.pool import RewardPool
from harness.rewards.reward import Reward
from harness.sampling import score
from harness.tasks import ProblemStream, heldout_problems
from harness.tasks.ordering import OrderingTask
from harness.store import read_json, read_jsonl
from harness.settings import ConfigError

TASK = OrderingTask(num_items=4, num_constraints=3, item_pool=4, missing_penalty=0.15)
TASK_CFG = TaskConfig(num_items=4, num_constraints=3)  # TASK, as a run's config names it
SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, max_completion_length=8)


@pytest.fixture
def policy(tmp_path):
    """A small random tiny Llama saved as a stage would save it: (path, model, tokenizer)."""
    tokenizer = build_tokenizer(TASK.vocabulary())
    model = build_tiny_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                             tokenizer, seed=0).eval()
    save_policy(model, tokenizer, tmp_path / "policy")
    return tmp_path / "policy", model, tokenizer


def _right_and_wrong(count: int) -> Labelled:
    """Completions of `count` problems, labelled by the gold verifier: a solver's order of each, and a
    wrong-looking one (an item dropped, or the items at random)."""
    rng = random.Random(0)
    problems, texts = [], []
    for problem in (TASK.sample(rng) for _ in range(count)):
        answer = TASK.format_only(problem, rng).split()
        wrong = " ".join(answer[:-1] if rng.random() < 0.5 else answer)
        problems += [problem, problem]
        texts += [TASK.solve(problem, rng), wrong]
    return Labelled(problems, texts, torch.tensor([TASK.gold(p, t) for p, t in zip(problems, texts)]),
                    torch.tensor([TASK.proxy(p, t) for p, t in zip(problems, texts)]))


@pytest.fixture(scope="module")
def pool():
    with RewardPool(workers=1, timeout=10, memory_gb=2) as workers:
        yield workers


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_the_reward_model_learns_to_tell_gold_correct_from_wrong_completions(policy):
    path, _, tokenizer = policy
    data = _right_and_wrong(24)
    assert 0 < data.gold.sum() < len(data.gold)
    classifier = classifier_from_policy(path, tokenizer, "float32", "cpu", seed=0)
    before = auc(reward_scores(classifier, tokenizer, [p.prompt for p in data.problems], data.texts), data.gold)
    losses = []
    rm_cfg = RewardModelConfig(steps=80, batch_size=16, learning_rate=3e-3)
    train_reward_model(classifier, tokenizer, data, rm_cfg, seed=0,
                       log=lambda step, metrics: losses.append(metrics["train/loss"]))
    scores = LearnedProxy(classifier, tokenizer)(data.problems, data.texts)
    assert len(losses) == 80 and sum(losses[-10:]) < 0.85 * sum(losses[:10])  # binary cross-entropy falls
    assert scores.min() >= 0 and scores.max() <= 1
    assert auc(scores, data.gold) > max(0.75, before), (before, auc(scores, data.gold))  # chance is 0.5


def test_the_new_head_is_seeded_by_the_run_seed(policy):
    path, _, tokenizer = policy
    heads = [classifier_from_policy(path, tokenizer, "float32", "cpu", seed).score.weight for seed in (0, 0, 1)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_auc_is_the_chance_that_a_right_completion_outscores_a_wrong_one():
    gold = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), gold) == 1.0
    assert auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), gold) == 0.0
    assert auc(torch.tensor([0.5, 0.9, 0.5, 0.1]), gold) == pytest.approx(3.5 / 4)  # a tie counts half
    assert math.isnan(auc(torch.tensor([0.3, 0.4]), torch.tensor([1.0, 1.0])))  # no wrong completion to outscore


def test_its_data_are_the_policys_completions_of_training_problems_labelled_by_the_gold_verifier(policy, pool):
    _, model, tokenizer = policy
    heldout = heldout_problems(TASK, 6, seed=1)
    stream = ProblemStream(TASK, "reward_model/0", {p.key for p in heldout})
    rm_cfg = RewardModelConfig(train_size=10, samples_per_prompt=4)
    rollout_cfg = RolloutConfig(max_completion_length=8)
    train, judged = labelled_samples(HFEngine(model, tokenizer), Reward.for_task(pool, TASK_CFG), stream, heldout, rm_cfg, rollout_cfg)
    assert len(train.texts) == len(train.problems) == len(train.gold) == 10  # 3 prompts x 4, cut to N
    assert not {p.key for p in train.problems} & {p.key for p in heldout}
    assert len({p.key for p in train.problems}) == 3
    for data in (train, judged):
        assert data.gold.tolist() == [TASK.gold(p, t) for p, t in zip(data.problems, data.texts)]
        assert data.task_proxy.tolist() == pytest.approx([TASK.proxy(p, t) for p, t in zip(data.problems, data.texts)])
    assert judged.problems == [p for p in heldout for _ in range(4)]


@pytest.fixture
def learned_proxy(policy):
    """An (untrained) reward model on the policy, saved and loaded back as the GRPO stage loads it."""
    path, _, tokenizer = policy
    classifier = classifier_from_policy(path, tokenizer, "float32", "cpu", seed=0)
    save_policy(classifier, tokenizer, path.parent / "reward_model")
    return LearnedProxy.load(path.parent / "reward_model", "float32", "cpu")


def test_grpo_scores_trains_on_and_logs_the_reward_model_as_the_proxy(policy, learned_proxy, pool):
    _, model, tokenizer = policy
    problems = heldout_problems(TASK, 3, seed=2)
    rollout = HFEngine(model, tokenizer).generate([p.prompt for p in problems], 2, SAMPLING)
    repeated = [p for p in problems for _ in range(2)]
    expected = reward_scores(learned_proxy.model, learned_proxy.tokenizer, [p.prompt for p in repeated],
                             rollout.texts)
    formula = torch.tensor([TASK.proxy(p, t) for p, t in zip(repeated, rollout.texts)])
    assert not torch.allclose(expected, formula)
    def scored(trains_on, learned=None):
        return score(Reward.for_task(pool, TASK_CFG, trains_on, learned), problems, rollout,
                     GRPOConfig(num_generations=2), 8)

    learned = scored("learned", learned_proxy)
    assert torch.equal(learned.proxy, expected) and torch.equal(learned.reward, expected)
    assert learned.gold.tolist() == [TASK.gold(p, t) for p, t in zip(repeated, rollout.texts)]
    gold = scored("gold", learned_proxy)
    assert torch.equal(gold.reward, gold.gold) and torch.equal(gold.proxy, expected)  # measured, not trained on
    assert torch.allclose(scored("proxy").proxy, formula)
    with pytest.raises(ValueError, match="needs the reward model"):
        scored("learned")


def test_evaluation_and_best_of_n_report_the_reward_models_score_as_the_proxy(policy, learned_proxy, pool):
    _, model, tokenizer = policy
    engine, heldout = HFEngine(model, tokenizer), heldout_problems(TASK, 4, seed=3)
    eval_cfg = EvalConfig(num_samples=2, best_of_n=3)
    reward = Reward.for_task(pool, TASK_CFG, learned=learned_proxy)
    evaluator = Evaluator(reward, heldout, eval_cfg, RolloutConfig(max_completion_length=8))
    for samples in (eval_cfg.num_samples, eval_cfg.best_of_n):  # the evaluator's own draws, drawn again
        with evaluator.own_randomness():
            texts = engine.generate([p.prompt for p in heldout], samples, evaluator.sampling).texts
        expected = learned_proxy([p for p in heldout for _ in range(samples)], texts)
        if samples == eval_cfg.num_samples:
            assert evaluator(model, engine)["eval/proxy_reward"] == pytest.approx(expected.mean().item())
        else:
            assert [row["proxy"] for row in evaluator.best_of_n_samples(engine)] == pytest.approx(expected.tolist())


@pytest.mark.parametrize("override, named", [
    ("reward_model.train_size=0", "reward_model.train_size=0: must be at least 1"),
    ("reward_model.samples_per_prompt=0", "reward_model.samples_per_prompt=0: must be at least 1"),
    ("reward_model.steps=-1", "reward_model.steps=-1: must be at least 0"),
    ("reward_model.batch_size=0", "reward_model.batch_size=0: must be at least 1"),
    ("reward_model.learning_rate=0", "reward_model.learning_rate=0.0: must be a positive number"),
    ("task.reward=learnt", "task.reward='learnt': must be one of gold, proxy, learned"),
    ("explore.reward=learned", "explore.reward='learned': must be one of gold, proxy"),
])
def test_a_bad_reward_model_setting_is_named_in_one_line(compose, override, named):
    with pytest.raises(ConfigError) as error:
        compose(override)
    assert str(error.value) == named


def keys(compose, *overrides) -> dict:
    runner = StageRunner(compose("pipeline.stages=[sft,grpo]", "sft.source=solver", *overrides), Path("unused"))
    return {stage: cache.stage_key(runner.key_inputs(stage)) for stage in ("sft", "reward_model", "grpo", "grpo_start")}


def test_the_reward_models_key_follows_its_settings_the_cold_start_and_the_seed_and_grpo_follows_it(compose):
    before = keys(compose, "task.reward=learned")
    assert compose("task.reward=learned").task.reward == "learned"
    for change in ("reward_model.train_size=500", "reward_model.steps=10", "seed=1", "sft.learning_rate=1e-3",
                   "rollout.temperature=0.7"):
        after = keys(compose, "task.reward=learned", change)
        assert after["reward_model"] != before["reward_model"] and after["grpo"] != before["grpo"], change
        assert after["grpo_start"] != before["grpo_start"], change  # the start's evaluation scores the proxy
    sft = keys(compose, "task.reward=learned", "sft.learning_rate=1e-3")
    assert sft["sft"] != before["sft"]  # the reward model's data come from the cold-started policy
    beta = keys(compose, "task.reward=learned", "grpo.beta=0.1")  # a sweep over grpo.* trains one reward model
    assert beta["reward_model"] == before["reward_model"] and beta["grpo"] != before["grpo"]
    assert beta["grpo_start"] == before["grpo_start"]
    gold = keys(compose, "task.reward=gold")
    assert gold["reward_model"] == before["reward_model"] and gold["grpo"] != before["grpo"]
    assert gold["grpo_start"] != before["grpo_start"]  # no learned proxy to score the start with
    assert keys(compose, "task.reward=gold", "reward_model.train_size=500")["grpo"] == gold["grpo"]  # not read


TINY_RUN = ["pipeline.stages=[grpo]", "task.reward=learned", "task.num_items=4", "task.num_constraints=3",
            "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
            "model.pretrain_steps=2", "model.pretrain_batch_size=8", "rollout.max_completion_length=8",
            "reward_model.train_size=12", "reward_model.steps=2", "reward_model.batch_size=4",
            "grpo.steps=1", "grpo.prompts_per_step=2", "grpo.num_generations=2", "tracking.log_completions_every=1",
            "eval.num_prompts=4", "eval.num_samples=2", "eval.best_of_n=2", "eval.eval_every=1",
            "checkpoint.keep=all", "tracking.mode=disabled"]


def test_a_learned_run_trains_grpo_on_its_cached_reward_model(compose, tmp_path):
    run = tmp_path / "learned"
    cfg = compose(*TINY_RUN, f"cache.dir={tmp_path / 'stages'}")
    pipe = Pipeline(cfg, run)
    assert pipe.order == ["reward_model", "grpo"]
    summary = pipe.run()
    judged = read_json(run / "reward_model" / "summary.json")
    assert judged["status"] == "finished" and judged["reward_model/train/size"] == 12
    assert judged["reward_model/heldout/size"] == 4 * 4 and 0 <= judged["reward_model/heldout/accuracy"] <= 1
    assert summary["reward_model"].keys() == judged.keys() - {"status"}  # a barely trained base: AUCs may be NaN
    assert [row["step"] for row in read_jsonl(run / "reward_model" / "metrics.jsonl")] == [1, 2]
    proxy = LearnedProxy.load(run / "reward_model" / "checkpoint", "float32", "cpu")
    rows = read_jsonl(run / "grpo" / "completions.jsonl")
    scored = proxy([SimpleNamespace(prompt=r["prompt"]) for r in rows], [r["completion"] for r in rows])
    assert [r["proxy"] for r in rows] == pytest.approx(scored.tolist())  # GRPO's proxy is the reward model's score
    assert 0 < read_jsonl(run / "grpo" / "eval.jsonl")[-1]["eval/proxy_reward"] < 1
    assert (run / "grpo" / "best_of_n.jsonl").exists()

    beta = Pipeline(compose(*TINY_RUN, f"cache.dir={tmp_path / 'stages'}", "grpo.beta=0.1"), tmp_path / "beta")
    beta.run()
    assert beta.cost["cost/reward_model/reused"] and not beta.cost["cost/grpo/reused"]
    assert json.loads((tmp_path / "beta" / "reward_model" / "summary.json").read_text())["reused_from"] == str(run)

