"""Text generation from a decoder-only model with a KV cache, one token at a time.

One forward over the whole prompt fills the cache (prefill); after that each
step feeds only the newest token. Tokens are yielded as soon as they are
chosen, so a caller can stream bytes to a terminal while the model works.

Context limit: the cache covers at most `model.config.max_seq_len` positions.
When it is full, generation stops (no sliding window): the last token yielded
is the one predicted from position max_seq_len - 1. Sliding would silently
drop the start of the context and re-encode it; stopping is honest and cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from stlm.generation.sampling import check_sampling_args, sample_next
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
    """Yield up to `max_new_tokens` new token ids continuing `prompt_ids`.

    The model needs `config.max_seq_len`, `new_cache(batch_size, max_len)` and
    `forward(ids, cache)` (a `DecoderLM` has them). A token in `stop_ids` is
    yielded and then generation ends (pass `stop_ids=()` to never stop early);
    it also ends when the context window is full (see the module docstring).
    temperature 0 is greedy. `seed` makes sampling reproducible; None uses
    torch's global generator.

    Arguments are checked here, before the first `next()`. Each step runs
    under `torch.inference_mode()` with the model in eval mode, and the
    model's own mode is restored before the token is yielded: nothing leaks
    into the caller's code between tokens, even if it never finishes the loop.
    """
    check_sampling_args(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    prompt = list(prompt_ids)
    if not prompt:
        raise ValueError("prompt_ids is empty: start it with at least one token (e.g. BOS)")
    max_seq_len = model.config.max_seq_len
    if len(prompt) > max_seq_len:
        raise ValueError(
            f"prompt of {len(prompt)} tokens is longer than the model's max_seq_len {max_seq_len}; shorten it"
        )
    return _generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, frozenset(stop_ids))


def _generate(
    model: nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    stop_ids: frozenset[int],
) -> Iterator[int]:
    if max_new_tokens == 0:
        return
    device = next(model.parameters()).device
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)

    def choose(logits: torch.Tensor) -> int:
        # logits (1, T, V): only the last position predicts the next token.
        ids = sample_next(logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        return int(ids.item())

    # The last new token is never fed back, so the cache needs prompt + max_new - 1
    # positions; it cannot exceed the rotary tables either.
    cache_len = min(model.config.max_seq_len, len(prompt) + max_new_tokens - 1)
    with _inference(model):
        cache = model.new_cache(1, max(cache_len, len(prompt)), device=device)
        prompt_t = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
        token = choose(model(prompt_t, cache))  # prefill: (1, T) -> logits (1, T, V)

    for n in range(1, max_new_tokens + 1):
        yield token
        if token in stop_ids or n == max_new_tokens or cache.length >= cache.max_len:
            return
        with _inference(model):
            step = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
            token = choose(model(step, cache))  # (1, 1) -> logits (1, 1, V)


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for one step, the model's mode restored after.

    Scoped per step rather than around the whole loop: a generator suspended
    inside a `with` would leave inference mode (a thread-local switch) on in
    the caller's code between tokens.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
