"""Decoding: choosing tokens from logits, and loops that drive a model with explicit caches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stlm.generation.decoder import generate
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


__all__ = ["generate", "sample_next", "stream"]
