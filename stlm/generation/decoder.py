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

import torch
from torch import nn

from stlm.generation.rows import CachedRows, inference_step
from stlm.generation.sampling import check_max_new_tokens, check_sampling_args, sample_next
from stlm.models.layers import KVCache
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
    with inference_step(model):
        cache = model.new_cache(1, max(cache_len, len(prompt)), device=device)
        prompt_t = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
        token = choose(model(prompt_t, cache))  # prefill: (1, T) -> logits (1, T, V)

    for n in range(1, max_new_tokens + 1):
        yield token
        if token in stop_ids or n == max_new_tokens or cache.length >= cache.max_len:
            return
        with inference_step(model):
            step = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
            token = choose(model(step, cache))  # (1, 1) -> logits (1, 1, V)


def generate_batch(
    model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: Iterable[int] = (EOS_ID,)
) -> list[list[int]]:
    """Greedy continuations of several prompts, each equal to `generate(..., temperature=0)` on it alone.

    The prompts join one `DecoderRows` together and step as one batch; a row
    ends as `generate` ends it (a stop id, max_new_tokens, or its context
    full) and leaves the batch with its cache rows.
    """
    check_max_new_tokens(max_new_tokens)
    rows = [list(prompt) for prompt in prompts]
    batch = DecoderRows(model)
    outputs: list[list[int]] = [[] for _ in rows]
    if not rows or max_new_tokens == 0:
        for row in rows:
            batch.check(row)
        return outputs
    stops = frozenset(stop_ids)
    limits = [batch.limit(row, max_new_tokens) for row in rows]
    live = list(range(len(rows)))  # which prompt each batch row belongs to
    chosen = batch.join(rows, limits).argmax(dim=-1)  # (B,)
    while True:
        keep = []
        for i, (row, token) in enumerate(zip(live, chosen.tolist())):
            outputs[row].append(token)
            if token not in stops and len(outputs[row]) < limits[row]:
                keep.append(i)
        if not keep:
            return outputs
        if len(keep) < len(live):
            batch.keep(keep)
            chosen = chosen[keep]
            live = [live[i] for i in keep]
        chosen = batch.step(chosen).argmax(dim=-1)  # (b,)


class DecoderRows(CachedRows):
    """Rows of a decoder-only model decoding as one batch, joining and leaving between steps
    (`stlm.generation.rows.RowBatch`).

    The model needs what `generate` needs plus `forward(ids, cache, positions)`
    (a `DecoderLM`). Joining prompts are right-padded and prefilled in one
    causal pass (a real token never sees the padding after it) into a cache of
    their own, which is then appended to the running one (`KVCache.extend`).
    Every step feeds each row's newest id at that row's own position, so rows
    of different lengths share a step while keeping their rotary positions and
    cache slots; attention reads slots up to the furthest row's position, the
    others' later slots masked.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.cache: KVCache | None = None
        self.last = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,) each row's newest position

    def check(self, prompt: list[int]) -> None:
        if not prompt:
            raise ValueError("a prompt is empty: start it with at least one token (e.g. BOS)")
        max_seq_len = self.model.config.max_seq_len
        if len(prompt) > max_seq_len:
            raise ValueError(
                f"prompt of {len(prompt)} tokens is longer than the model's max_seq_len {max_seq_len}; shorten it"
            )

    def limit(self, prompt: list[int], max_new_tokens: int) -> int:
        # generate stops once its cache (prompt + new - 1 positions) fills the context.
        return min(max_new_tokens, self.model.config.max_seq_len - len(prompt) + 1)

    def join(self, prompts: list[list[int]], limits: list[int]) -> torch.Tensor:
        for prompt in prompts:
            self.check(prompt)
        model, device = self.model, self.device
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        ids = torch.zeros((len(prompts), width), dtype=torch.long, device=device)  # (n, P), right-padded
        for i, prompt in enumerate(prompts):
            ids[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        last = torch.tensor(lengths, device=device) - 1  # (n,)
        # The last new id is never fed back: a row needs prompt + limit - 1 slots.
        slots = max(width, max(n + k - 1 for n, k in zip(lengths, limits)))
        with inference_step(model):
            cache = model.new_cache(len(prompts), slots, device=device)
            logits = model(ids, cache)  # prefill: (n, P) -> (n, P, V)
            if self.cache is None or len(self) == 0:
                self.cache = cache
            else:
                self.cache.extend(cache)
            self.last = torch.cat([self.last, last])
            return logits[torch.arange(len(prompts), device=device), last]  # (n, V)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.last = self.last + 1
        with inference_step(self.model):
            if len(self) == 1:
                # One row: `generate`'s own step (no per-row mask or scattered cache writes), the
                # cache's length set to the row's position; slots beyond it are never read.
                self.cache.length = int(self.last[0])
                return self.model(ids[:, None], self.cache)[:, -1]  # (1, 1) -> (1, V)
            return self.model(ids[:, None], self.cache, positions=self.last)[:, -1]  # (B, 1) -> (B, V)
