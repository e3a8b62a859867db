"""Text generation from a pooled byte model, one byte at a time with explicit caches.

The loop is the decoder loop (`stlm.generation.decoder`): prefill the prompt,
then feed back one byte per step, sampling as configured, stopping at a stop
id or when the context is full. What differs is inside the model's cached
forward (`PooledByteLM.forward(ids, cache)`):

- the local encoder and decoder run on each new byte with a KV cache
  (a sliding window, masked to the current document);
- the open patch is kept as a running sum of its bytes' pooling inputs;
- the global core runs only when the new byte closes a patch, for that one
  patch, with its own KV cache (one slot per patch); bytes in between reuse
  the output of the latest closed patch.

So a step costs the local layers plus, about once per 6 bytes with the space
rule, one core step, and greedy generation equals the argmax of the full
uncached forward on the growing prefix (tests/generation/test_pooled_generation.py).

Same signature as `stlm.generation.decoder.generate`, so a caller can
dispatch on the model type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import nn

from stlm.generation import decoder
from stlm.models.byte_decoder import PooledByteLM
from stlm.tokenizers.byte import EOS_ID


def generate(
    model: nn.Module,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] = (EOS_ID,),
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new byte ids continuing `prompt_ids` (see `decoder.generate`).

    Arguments are checked at the call, before the first `next()`. The prompt
    usually starts with BOS: the model treats what follows a BOS as a new
    document, and bytes before it as another document it cannot see.
    """
    if not isinstance(model, PooledByteLM):
        raise TypeError(f"pooled generation needs a PooledByteLM, got {type(model).__name__}")
    return decoder.generate(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_ids=stop_ids,
    )
