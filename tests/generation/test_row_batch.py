"""Continuous batching: rows that join a running batch at different steps, sample with their own
settings and generators, and leave at different times decode exactly as they do alone.

Each row's logits at every step match its solo run's (the batch changes only the kernels'
summation order) and its ids are equal, for greedy and seeded sampling; the solo run itself
gives the ids of the single-sequence loops (`generate`, `stream_seq2seq`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import torch

from stlm.generation.decoder import DecoderRows, generate
from stlm.generation.rows import RowBatch
from stlm.generation.sampling import sample_next
from stlm.generation.seq2seq import Seq2SeqRows, stream_seq2seq
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.models.t5 import T5Config, T5Model
from stlm.tokenizers.byte import BOS_ID

V = 40


@dataclass
class Plan:
    join_at: int  # the batch step at which the row joins
    prompt: list[int]
    max_new: int
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    ids: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    limit: int = 0
    generator: torch.Generator | None = None
    done: bool = False

    def fresh(self, join_at: int = 0) -> Plan:
        return Plan(join_at, self.prompt, self.max_new, self.temperature, self.top_k, self.top_p, self.seed)


def drive(batch: RowBatch, plans: list[Plan], eos: int) -> int:
    """Run the schedule as the server's engine does; returns the largest batch that stepped."""
    members: list[Plan] = []
    waiting = sorted(plans, key=lambda p: p.join_at)
    step, widest = 0, 0
    while waiting or members:
        chosen = []
        if members:
            widest = max(widest, len(members))
            newest = torch.tensor([p.ids[-1] for p in members])
            chosen += zip(members, batch.step(newest))
        joining = [p for p in waiting if p.join_at <= step]
        if joining:
            waiting = [p for p in waiting if p.join_at > step]
            for p in joining:
                p.limit = batch.limit(p.prompt, p.max_new)
                if p.seed is not None and p.temperature > 0:
                    p.generator = torch.Generator().manual_seed(p.seed)
            chosen += zip(joining, batch.join([p.prompt for p in joining], [p.limit for p in joining]))
            members += joining
        for p, logits in chosen:
            p.logits.append(logits.float().clone())
            token = sample_next(
                logits[None], temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, generator=p.generator
            )
            p.ids.append(int(token))
            p.done = p.ids[-1] == eos or len(p.ids) >= p.limit
        keep = [i for i, p in enumerate(members) if not p.done]
        batch.keep(keep)
        members = [members[i] for i in keep]
        step += 1
    return widest


def check_alone(make_batch, plans: list[Plan], eos: int) -> list[Plan]:
    """The solo runs of `plans` (already driven together), checked against them."""
    alone = []
    for p in plans:
        solo = p.fresh()
        drive(make_batch(), [solo], eos)
        assert p.ids == solo.ids, f"row joining at step {p.join_at} differs from its solo run"
        for got, want in zip(p.logits, solo.logits):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        alone.append(solo)
    return alone


def schedule(rng: random.Random, n: int, make_prompt, max_new: int) -> list[Plan]:
    """Rows joining at different steps with different prompt lengths; half greedy, half seeded sampling."""
    plans = []
    for i in range(n):
        sampled = i % 2 == 1
        plans.append(
            Plan(
                join_at=rng.choice([0, 0, 1, 3, 6, 10]),
                prompt=make_prompt(rng),
                max_new=rng.randint(max_new // 2, max_new),
                temperature=0.9 if sampled else 0.0,
                top_k=[None, 20][i % 4 == 1] if sampled else None,
                top_p=0.95 if i % 4 == 3 else None,
                seed=100 + i,
            )
        )
    return plans


@pytest.fixture(scope="module")
def decoder() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=48)).eval()


@pytest.fixture(scope="module")
def t5() -> T5Model:
    torch.manual_seed(0)
    m = T5Model(T5Config(vocab_size=V, d_model=32, d_head=8, n_heads=4, d_ff=64, n_layers=2, eos_id=1))
    with torch.no_grad():  # sharper than T5's init: varied text, and some rows write EOS early
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.4)
    return m.eval()


def test_decoder_rows_joining_and_leaving_decode_as_alone(decoder, one_thread):
    rng = random.Random(0)
    plans = schedule(rng, 8, lambda r: [BOS_ID] + [r.randrange(3, 264) for _ in range(r.randint(0, 40))], 20)
    eos = 7
    widest = drive(DecoderRows(decoder), plans, eos)
    assert widest >= 4  # rows really stepped together
    assert any(p.limit < p.max_new for p in plans)  # some rows are cut by the 48-position context
    alone = check_alone(lambda: DecoderRows(decoder), plans, eos)
    for solo in alone:  # the solo run is the single-sequence loop
        loop = generate(
            decoder,
            solo.prompt,
            max_new_tokens=solo.max_new,
            temperature=solo.temperature,
            top_k=solo.top_k,
            top_p=solo.top_p,
            seed=solo.seed,
            stop_ids=(eos,),
        )
        assert list(loop) == solo.ids


def test_seq2seq_rows_joining_and_leaving_decode_as_alone(t5, one_thread):
    rng = random.Random(1)
    plans = schedule(rng, 8, lambda r: [r.randrange(2, V) for _ in range(r.randint(0, 30))] + [1], 16)
    widest = drive(Seq2SeqRows(t5), plans, eos=1)
    assert widest >= 4
    assert any(p.ids[-1] == 1 for p in plans) and any(len(p.ids) == p.max_new for p in plans)
    alone = check_alone(lambda: Seq2SeqRows(t5), plans, eos=1)
    for solo in alone:
        loop = stream_seq2seq(
            t5,
            solo.prompt,
            max_new_tokens=solo.max_new,
            temperature=solo.temperature,
            top_k=solo.top_k,
            top_p=solo.top_p,
            seed=solo.seed,
        )
        assert list(loop) == solo.ids


def test_rows_refuse_what_the_model_cannot_take_and_nothing_joins(decoder, t5, one_thread):
    batch = DecoderRows(decoder)
    batch.join([[BOS_ID, 5]], [3])
    with pytest.raises(ValueError, match="longer than"):
        batch.join([[BOS_ID, 6], [BOS_ID] * 49], [3, 3])
    assert len(batch) == 1
    assert batch.limit([BOS_ID] * 48, 10) == 1  # a full context still writes one id, as generate does
    rows = Seq2SeqRows(t5)
    with pytest.raises(ValueError, match="empty"):
        rows.join([[3, 1], []], [2, 2])
    assert len(rows) == 0
