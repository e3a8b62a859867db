"""Continuous batching in the engine: a request served together with others that join and leave
at other times gets exactly what it gets served alone, for decoder and T5 runs, greedy and seeded.

The engine is driven directly (no HTTP): rows are submitted while others are generating, so they
join a running batch between steps; the batch's own step is watched to show rows really shared
forward passes. Each request's ids, text and finish reason are compared with the same request
served alone, and with the family's own single-sequence loop (what `stlm generate` runs).
"""

from __future__ import annotations

import threading
import time

import pytest

from stlm.serve.engine import Done, Engine, Piece, Row
from stlm.serve.protocol import Sampling

REQUESTS = [  # prompt, temperature, top_k, top_p, stop, seed, max_tokens: different lengths and settings
    ("The function ", 0.0, None, None, (), 1, 24),
    ("x", 0.9, None, None, (), 7, 30),
    ("A much longer prompt that sits at a later position than the others do ", 1.0, 40, 0.95, (), 3, 20),
    ("for i in ", 0.0, None, None, ("e",), 2, 28),
    ("Numbers: 1, 2, ", 0.7, 20, None, (), 11, 16),
    ("def f(", 1.0, None, 0.9, (), 5, 26),
]


class Collected:
    def __init__(self) -> None:
        self.text = ""
        self.events = 0
        self.done: Done | None = None
        self.finished = threading.Event()

    def __call__(self, event: Piece | Done) -> None:
        self.events += 1
        if isinstance(event, Piece):
            self.text += event.text
        else:
            self.done = event
            self.finished.set()


def make_row(model, request) -> tuple[Row, Collected]:
    prompt, temperature, top_k, top_p, stop, seed, max_tokens = request
    sampling = Sampling(max_tokens, temperature, top_p, top_k, stop, seed, None)
    out = Collected()
    return Row(0, model.family.prompt_ids(model.tokenizer, prompt), sampling, seed, out), out


def serve(model, requests, *, staggered: bool, per_row: bool = False) -> tuple[list[tuple], list[int]]:
    """(ids, text, finish reason) of each request, and the size of every batched step."""
    engine = Engine(model, max_batch=4, queue_size=16)
    assert engine.batch is not None, "decoder and T5 runs are served by a batch"
    sizes: list[int] = []
    step = engine.batch.step
    engine.batch.step = lambda ids: (sizes.append(len(ids)), step(ids))[1]  # type: ignore[method-assign]
    if per_row:
        engine.batch = None  # each row by its family's own loop (the engine before batching)
    engine.start()
    results = []
    try:
        rows = [make_row(model, r) for r in requests]
        for i, (row, out) in enumerate(rows):
            engine.submit([row])
            if not staggered:
                assert out.finished.wait(60)
            elif i + 1 < len(rows):  # the next one joins while this one is generating
                deadline = time.monotonic() + 60
                while out.events < 2 + i % 3 and not out.finished.is_set() and time.monotonic() < deadline:
                    time.sleep(0.001)
        for row, out in rows:
            assert out.finished.wait(60) and out.done is not None and out.done.error is None
            results.append((row.ids, out.text, out.done.finish_reason))
        deadline = time.monotonic() + 10
        while engine.counts() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert engine.counts() == (0, 0)
        assert engine.batch is None or len(engine.batch) == 0  # every row left, its cache rows freed
    finally:
        engine.stop()
    return results, sizes


def loop_ids(model, request) -> list[int]:
    """What the family's single-sequence loop writes for the request (EOS dropped, no stop strings)."""
    prompt, temperature, top_k, top_p, _, seed, max_tokens = request
    ids = model.family.stream(
        model.module,
        model.family.prompt_ids(model.tokenizer, prompt),
        eos_id=model.tokenizer.eos_id,
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    return [t for t in ids if t != model.tokenizer.eos_id]


def check_together_equals_alone(model) -> None:
    together, sizes = serve(model, REQUESTS, staggered=True)
    alone, alone_sizes = serve(model, REQUESTS, staggered=False)
    assert max(sizes) >= 3 and max(alone_sizes) == 1  # shared steps together; one row at a time alone
    assert together == alone
    assert serve(model, REQUESTS, staggered=True, per_row=True)[0] == alone  # as the per-row engine serves them
    for request, (ids, _, _) in zip(REQUESTS, alone):
        if not request[4]:  # no stop string: the whole answer is the loop's
            assert ids == loop_ids(model, request)


def test_decoder_requests_batched_together_equal_each_alone(tiny_model):
    check_together_equals_alone(tiny_model)


def test_t5_requests_batched_together_equal_each_alone(t5_debug_model):
    check_together_equals_alone(t5_debug_model)


def test_a_cancelled_row_leaves_the_batch_and_frees_its_slot(tiny_model):
    engine = Engine(tiny_model, max_batch=2, queue_size=4)
    engine.start()
    try:
        long, out = make_row(tiny_model, ("The ", 1.0, None, None, (), 9, 1000))
        short, short_out = make_row(tiny_model, REQUESTS[0])
        engine.submit([long, short])
        deadline = time.monotonic() + 30
        while out.events < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        engine.cancel([long])
        assert short_out.finished.wait(60)
        while engine.counts() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert engine.counts() == (0, 0) and len(engine.batch) == 0
        assert not out.finished.is_set() and len(long.ids) < 1000  # it left without an answer
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def t5_debug_model(tmp_path_factory):
    """A randomly initialised t5-debug checkpoint (ByT5 bytes), weights sharpened so answers vary."""
    import torch

    import stlm
    from stlm import checkpoint as ckpt_io
    from stlm import registry

    torch.manual_seed(0)
    family, cfg = registry.resolve_model("t5-debug")
    model = family.build(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    run = tmp_path_factory.mktemp("t5-batching") / "run"
    record = ckpt_io.RunRecord(family, cfg, {"name": "byt5"}, {"run": {"model": "t5-debug"}})
    ckpt_io.save_checkpoint(run, 0, model=model, optimizer=None, config=record, state={"step": 0}, keep=1)
    return stlm.load(run, device="cpu")
