"""Self-speculative greedy decoding with the multi-token heads of an mtp:K model.

The model drafts and verifies itself (Gloeckle et al. 2024, after Stern et
al. 2018's blockwise parallel decoding): one forward with `heads=True` gives,
at the newest position, the next id (head 1, certain under greedy) and
guesses for the K-1 ids after it (heads 2..K). The next forward feeds the
certain id and the guesses together and keeps the longest prefix of guesses
that head 1 agrees with, plus head 1's own id after that prefix:

    last logits      head 1 -> n         heads 2..K -> d1 d2 d3            (K = 4)
    feed             [ n  d1  d2  d3 ]   one cached forward, (1, K) -> (1, K, K, V)
    head 1 says      [ g0 g1  g2  g3 ]   g_i: the greedy id after feed[0..i]
    accept           d1 (= g0), d2 (= g1); d3 != g2: stop
    emitted          n d1 d2 and next round's certain id g2 (drafts from that position's heads)
    cache            rolled back to drop d3's keys (KVCache.truncate)

Every emitted id is head 1's argmax given exactly the ids before it, so the
output is plain greedy decoding's, id for id (up to floating-point ties
between two ids, which a chunked and a one-id forward may break differently;
tests check equality in fp32). Up to K ids per forward instead of one.

`chunked=False` is for models whose cache takes one id per step (the pooled
byte model: its open-patch state has no rollback): the drafts are fed one at
a time and feeding stops at the first disagreement, so nothing is ever
rolled back; the output is the same, but a round costs as many steps as ids
it emits, so there is no speedup to expect, only the acceptance statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stlm.generation.rows import inference_step
from stlm.generation.sampling import check_max_new_tokens
from stlm.tokenizers.byte import EOS_ID


@dataclass
class SpeculativeStats:
    """What a speculative run did. A round is one certain id and the drafts checked after it
    (chunked: one forward, the prefill's round included)."""

    rounds: int = 0
    forwards: int = 0  # model calls after the prefill (chunked: one per round; stepwise: one per id)
    emitted: int = 0  # ids yielded
    drafted: int = 0  # guesses checked
    accepted: int = 0  # guesses head 1 agreed with

    @property
    def mean_accepted(self) -> float:
        """Ids emitted per round: 1 is plain greedy, K the most mtp:K allows."""
        return self.emitted / self.rounds if self.rounds else 0.0


def generate_speculative(
    model: nn.Module,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    stop_ids: Iterable[int] = (EOS_ID,),
    chunked: bool = True,
    stats: SpeculativeStats | None = None,
) -> Iterator[int]:
    """Yield the greedy continuation of `prompt_ids` (as `decoder.generate(..., temperature=0)` would),
    drafting with the model's multi-token heads (`model(ids, cache, heads=True)`, config.mtp_heads > 0).

    `stats`, if given, is filled in as ids are yielded.
    """
    check_max_new_tokens(max_new_tokens)
    if not getattr(model.config, "mtp_heads", 0):
        raise ValueError(
            "speculative decoding drafts with multi-token heads; this model has none (train it with --objective mtp:K)"
        )
    prompt = list(prompt_ids)
    if not prompt:
        raise ValueError("prompt_ids is empty: start it with at least one token (e.g. BOS)")
    max_seq_len = model.config.max_seq_len
    if len(prompt) > max_seq_len:
        raise ValueError(
            f"prompt of {len(prompt)} tokens is longer than the model's max_seq_len {max_seq_len}; shorten it"
        )
    run = _chunked if chunked else _stepwise
    return run(model, prompt, max_new_tokens, frozenset(stop_ids), stats or SpeculativeStats())


def _prefill(model: nn.Module, prompt: list[int], max_new: int) -> tuple[torch.device, int, Any, list[int]]:
    """(device, limit, cache, guess) both loops start from: the prompt fed once into a fresh cache.

    limit: ids to emit at most; as plain greedy, the last new id is never fed and the context ends at
    max_seq_len. guess (K,): head 1's next id, then the K-1 drafts of heads 2..K.
    """
    device = next(model.parameters()).device
    limit = min(max_new, model.config.max_seq_len - len(prompt) + 1)
    with inference_step(model):
        cache = model.new_cache(1, len(prompt) + limit - 1, device=device)
        logits = model(torch.tensor([prompt], device=device), cache, heads=True)[0, -1]  # (K, V)
        guess = logits.argmax(dim=-1).tolist()  # (K,)
    return device, limit, cache, guess


def _chunked(
    model: nn.Module, prompt: list[int], max_new: int, stops: frozenset[int], stats: SpeculativeStats
) -> Iterator[int]:
    if max_new == 0:
        return
    device, limit, cache, guess = _prefill(model, prompt, max_new)
    k = len(guess)
    emitted = 0
    while True:
        token, drafts = guess[0], guess[1:]
        stats.rounds += 1
        yield token
        emitted += 1
        stats.emitted += 1
        if token in stops or emitted == limit:
            return
        drafts = drafts[: min(k - 1, limit - emitted - 1)]  # room for the drafts and the id after them
        start = cache.length
        with inference_step(model):
            feed = torch.tensor([[token, *drafts]], device=device)  # (1, 1 + d)
            out = model(feed, cache, heads=True)[0]  # (1 + d, K, V)
            best = out.argmax(dim=-1)  # (1 + d, K): per fed position, head 1's id and the next drafts
            greedy = best[:, 0].tolist()
        stats.forwards += 1
        stats.drafted += len(drafts)
        n = 0
        while n < len(drafts) and drafts[n] == greedy[n]:
            n += 1
        cache.truncate(start + 1 + n)  # keep the certain id and the accepted drafts
        stats.accepted += n
        for draft in drafts[:n]:
            yield draft
            emitted += 1
            stats.emitted += 1
            if draft in stops or emitted == limit:
                return
        guess = best[n].tolist()


def _stepwise(
    model: nn.Module, prompt: list[int], max_new: int, stops: frozenset[int], stats: SpeculativeStats
) -> Iterator[int]:
    if max_new == 0:
        return
    device, limit, cache, guess = _prefill(model, prompt, max_new)
    emitted = 0
    pending: list[int] = []  # drafts of the current round not yet checked
    while True:
        token = guess[0]
        if pending:
            stats.drafted += 1
        if pending and pending[0] == token:
            stats.accepted += 1
            pending = pending[1:]
        else:  # no drafts left, or one rejected: a new round starts at this certain id
            stats.rounds += 1
            pending = guess[1:]
        yield token
        emitted += 1
        stats.emitted += 1
        if token in stops or emitted == limit:
            return
        with inference_step(model):
            guess = model(torch.tensor([[token]], device=device), cache, heads=True)[0, -1].argmax(dim=-1).tolist()
        stats.forwards += 1
