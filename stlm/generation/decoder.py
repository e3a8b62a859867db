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

from stlm.generation.sampling import check_max_new_tokens, check_sampling_args, sample_next
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
    check_max_new_tokens(max_new_tokens)
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


def generate_batch(
    model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: Iterable[int] = (EOS_ID,)
) -> list[list[int]]:
    """Greedy continuations of several prompts, each equal to `generate(..., temperature=0)` on it alone.

    The model needs what `generate` needs plus `forward(ids, cache, positions)`
    (a `DecoderLM`). Prompts are right-padded and prefilled in one causal pass:
    a real token never sees the padding after it. Then every step feeds each
    row's newest token at that row's own position (`positions`), so rows of
    different lengths share a step while keeping their rotary positions and
    cache slots. A row ends as `generate` ends it (a stop id, max_new_tokens,
    or its context full) and leaves the batch with its cache rows.
    """
    check_max_new_tokens(max_new_tokens)
    rows = [list(prompt) for prompt in prompts]
    max_seq_len = model.config.max_seq_len
    for row in rows:
        if not row:
            raise ValueError("a prompt is empty: start it with at least one token (e.g. BOS)")
        if len(row) > max_seq_len:
            raise ValueError(
                f"prompt of {len(row)} tokens is longer than the model's max_seq_len {max_seq_len}; shorten it"
            )
    outputs: list[list[int]] = [[] for _ in rows]
    if not rows or max_new_tokens == 0:
        return outputs
    stops = frozenset(stop_ids)
    device = next(model.parameters()).device
    lengths = [len(row) for row in rows]
    # The tokens row i may write: generate stops once its cache (prompt + new - 1) is full.
    limits = [min(max_new_tokens, max_seq_len - n + 1) for n in lengths]
    width = max(lengths)
    prompt = torch.zeros((len(rows), width), dtype=torch.long, device=device)  # (B, P), right-padded
    for i, row in enumerate(rows):
        prompt[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    live = list(range(len(rows)))  # which prompt each batch row belongs to
    last = torch.tensor(lengths, device=device) - 1  # (B,) each row's newest position
    with _inference(model):
        slots = max(width, max(n + k - 1 for n, k in zip(lengths, limits)))
        cache = model.new_cache(len(rows), slots, device=device)
        logits = model(prompt, cache)  # prefill: (B, P) -> (B, P, V)
        chosen = logits[torch.arange(len(rows), device=device), last].argmax(dim=-1)  # (B,)
        while True:
            keep = []
            for i, (row, token) in enumerate(zip(live, chosen.tolist())):
                outputs[row].append(token)
                if token not in stops and len(outputs[row]) < limits[row]:
                    keep.append(i)
            if not keep:
                return outputs
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.reorder(index)
                chosen, last = chosen[index], last[index]
                live = [live[i] for i in keep]
            last = last + 1
            chosen = model(chosen[:, None], cache, positions=last)[:, -1].argmax(dim=-1)  # (b, 1) -> (b,)


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for one step, the model's mode restored after.

    Scoped per step rather than around the whole loop: a generator suspended
    inside a `with` would leave inference mode (a thread-local switch) on in
    the caller's code between tokens. The mode is only toggled when the model
    is training: `eval()` and `train()` walk every module, twice per token.
    """
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()
