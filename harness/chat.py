"""Prompts as a model expects them: inside its chat template when it has one (instruct models),
as they are otherwise (the tiny model, base models)."""

from __future__ import annotations


def chat_format(tokenizer, prompts: list[str]) -> tuple[list[str], bool]:
    """The texts to tokenize, and whether tokenizing should add special tokens: a rendered
    template already holds the ones it needs, and a second BOS would shift every position."""
    if not getattr(tokenizer, "chat_template", None):
        return prompts, True
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    return texts, False
