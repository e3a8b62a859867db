"""Decoding: choosing tokens from logits, and loops that drive a model with explicit caches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stlm.generation.decoder import generate, generate_batch
from stlm.generation.sampling import sample_next


def stream(family: str, model: Any, prompt_ids: list[int], *, eos_id: int, **sampling: Any) -> Iterator[int]:
    """New token ids for a prompt, whatever the model family.

    Decoder-only families continue the prompt; an encoder-decoder reads the
    prompt with its encoder and writes a fresh target. `sampling` holds
    max_new_tokens, temperature, top_k, top_p and seed.
    """
    if family == "t5":
        from stlm.generation.seq2seq import stream_seq2seq

        return stream_seq2seq(model, prompt_ids, eos_id=eos_id, **sampling)
    if family == "pooled":
        from stlm.generation.pooled import generate as generate_pooled

        return generate_pooled(model, prompt_ids, stop_ids=(eos_id,), **sampling)
    return generate(model, prompt_ids, stop_ids=(eos_id,), **sampling)


def generate_greedy(
    family: str, model: Any, prompts: list[list[int]], *, eos_id: int, max_new_tokens: int
) -> list[list[int]]:
    """Greedy new token ids for several prompts, each what `stream(..., temperature=0)` gives it alone.

    t5 and decoder models run the prompts as one batch (`generate_seq2seq_batch`,
    `decoder.generate_batch`); a pooled model's cached decoding takes one
    sequence at a time (its patch state is per sequence), so it loops.
    """
    if family == "t5":
        from stlm.generation.seq2seq import generate_seq2seq_batch

        return generate_seq2seq_batch(model, prompts, max_new_tokens=max_new_tokens, eos_id=eos_id)
    if family == "pooled":
        return [
            list(stream(family, model, prompt, eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=0.0))
            for prompt in prompts
        ]
    return generate_batch(model, prompts, max_new_tokens=max_new_tokens, stop_ids=(eos_id,))


__all__ = ["generate", "generate_batch", "generate_greedy", "sample_next", "stream"]
