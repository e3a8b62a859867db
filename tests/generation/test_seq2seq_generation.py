"""generate_seq2seq / stream_seq2seq: cached decoding equals uncached references, beams included.

Parity with Hugging Face's generate() is in tests/interop/test_hf_t5_parity.py;
here the references are brute force: full, uncached decoder passes over the
growing prefix, and a beam search that recomputes every beam from scratch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlm.generation.seq2seq import generate_seq2seq, stream_seq2seq
from stlm.models.t5 import T5Config, T5Model

V = 40
SOURCE = [5, 9, 14, 3, 22, 7, 1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: a second thread only adds scheduling waits on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> T5Model:
    torch.manual_seed(0)
    m = T5Model(T5Config(vocab_size=V, d_model=32, d_head=8, n_heads=4, d_ff=64, n_layers=2, eos_id=1))
    with torch.no_grad():  # T5's init gives near-uniform logits; sharper ones give varied, decisive text
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.4)
    return m.eval()


def full_logits(model: T5Model, source: list[int], prefix: list[int]) -> torch.Tensor:
    """Next-token logits (V,) after `prefix` (decoder inputs), from an uncached forward."""
    with torch.no_grad():
        return model(torch.tensor([source]), torch.tensor([prefix]))[0, -1]


def greedy_reference(model: T5Model, source: list[int], n: int, eos: int) -> list[int]:
    prefix = [model.config.decoder_start_id]
    for _ in range(n):
        prefix.append(int(full_logits(model, source, prefix).argmax()))
        if prefix[-1] == eos:
            break
    return prefix[1:]


def beam_reference(model: T5Model, source: list[int], beams: int, n: int, eos: int, alpha: float) -> list[int]:
    """Textbook beam search over full recomputation, with the stopping rules of seq2seq.py."""
    running = [(0.0, [model.config.decoder_start_id])]
    finished: list[tuple[float, list[int]]] = []
    for length in range(1, n + 1):
        candidates = []
        for score, seq in running:
            logp = F.log_softmax(full_logits(model, source, seq).float(), dim=-1)
            candidates += [(score + float(logp[t]), seq + [t]) for t in range(V)]
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[: 2 * beams]
        for score, seq in candidates[:beams]:
            if seq[-1] == eos or length == n:
                finished.append((score / length**alpha, seq[1:]))
        finished = sorted(finished, key=lambda f: -f[0])[:beams]
        alive = [c for c in candidates if not (c[1][-1] == eos or length == n)]
        if not alive:
            break
        running = alive[:beams]
        if len(finished) == beams and running[0][0] / length**alpha <= finished[-1][0]:
            break
    return finished[0][1]


def test_greedy_equals_argmax_of_full_forward(model):
    for eos in (1, 3, 17):
        expected = greedy_reference(model, SOURCE, 12, eos)
        assert generate_seq2seq(model, SOURCE, max_new_tokens=12, eos_id=eos) == expected
        assert list(stream_seq2seq(model, torch.tensor([SOURCE]), max_new_tokens=12, eos_id=eos)) == expected


def test_stops_after_eos_and_at_max_new_tokens(model):
    first = greedy_reference(model, SOURCE, 1, eos=-1)[0]
    assert generate_seq2seq(model, SOURCE, max_new_tokens=10, eos_id=first) == [first]
    assert len(generate_seq2seq(model, SOURCE, max_new_tokens=5, eos_id=-1)) == 5
    assert generate_seq2seq(model, SOURCE, max_new_tokens=0) == []
    assert generate_seq2seq(model, SOURCE, max_new_tokens=0, num_beams=2) == []


@pytest.mark.parametrize("alpha", [1.0, 0.0, 2.0])
@pytest.mark.parametrize("beams", [2, 3])
def test_beam_search_equals_uncached_reference(model, beams, alpha):
    sources = [SOURCE, [8, 8, 30, 2, 1], [12, 4, 19, 33, 6, 25, 11, 1]]
    ended_at_eos = 0
    for source in sources:
        for eos in (34, 29):  # tokens this model emits often, so hypotheses end at EOS at various lengths
            expected = beam_reference(model, source, beams, 8, eos, alpha)
            got = generate_seq2seq(model, source, max_new_tokens=8, num_beams=beams, length_penalty=alpha, eos_id=eos)
            assert got == expected
            ended_at_eos += got[-1] == eos
    assert ended_at_eos, "cover hypotheses that end at EOS, not only at the length limit"


def test_one_beam_is_greedy(model):
    assert generate_seq2seq(model, SOURCE, max_new_tokens=8, num_beams=1) == greedy_reference(model, SOURCE, 8, 1)


def test_sampling_is_reproducible_with_a_seed(model):
    runs = [generate_seq2seq(model, SOURCE, max_new_tokens=15, temperature=1.5, seed=s, eos_id=-1) for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    greedy = generate_seq2seq(model, SOURCE, max_new_tokens=15, eos_id=-1)
    assert generate_seq2seq(model, SOURCE, max_new_tokens=15, temperature=1.0, top_k=1, seed=3, eos_id=-1) == greedy


def test_model_mode_is_restored(model):
    model.train()
    try:
        stream = stream_seq2seq(model, SOURCE, max_new_tokens=3)
        next(stream)
        assert model.training and not torch.is_inference_mode_enabled()
        generate_seq2seq(model, SOURCE, max_new_tokens=3, num_beams=2)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=0), "num_beams"),
        (dict(num_beams=2, temperature=0.7), "beam search is deterministic"),
        (dict(num_beams=2, top_k=5), "beam search is deterministic"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(input_ids=[]), "input_ids is empty"),
        (dict(input_ids=torch.zeros(2, 3, dtype=torch.long)), "one source at a time"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    settings = dict(input_ids=SOURCE, max_new_tokens=4)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_seq2seq(model, **settings)
