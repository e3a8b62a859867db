"""generate(): streaming, cached decoding that matches the uncached model exactly."""

from __future__ import annotations

import pytest
import torch

from stlm.generation.decoder import generate
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.tokenizers.byte import BOS_ID

PROMPT = [BOS_ID, 72, 105, 32]


@pytest.fixture(scope="module")
def model() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=48))


def greedy_reference(model: DecoderLM, prompt: list[int], n: int) -> list[int]:
    """Argmax of the full, uncached forward on the growing prefix."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def test_greedy_equals_argmax_of_full_forward(model):
    out = list(generate(model, PROMPT, max_new_tokens=30, temperature=0, stop_ids=()))
    assert out == greedy_reference(model, PROMPT, 30)


def test_stops_after_yielding_a_stop_id(model):
    first = greedy_reference(model, PROMPT, 1)[0]
    assert list(generate(model, PROMPT, max_new_tokens=10, temperature=0, stop_ids=(first,))) == [first]


def test_stops_when_the_context_is_full(model):
    prompt = PROMPT * 10  # 40 of 48 positions
    out = list(generate(model, prompt, max_new_tokens=100, temperature=0, stop_ids=()))
    assert len(out) == 48 - 40 + 1  # the last token is predicted from position 47, never fed back
    assert out == greedy_reference(model, prompt, len(out))
    assert len(list(generate(model, PROMPT * 12, max_new_tokens=5, temperature=0, stop_ids=()))) == 1


def test_seeded_sampling_is_reproducible(model):
    run = lambda seed: list(generate(model, PROMPT, max_new_tokens=20, seed=seed, top_k=50, stop_ids=()))  # noqa: E731
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_streams_lazily_and_leaves_mode_and_grad_state_alone(model):
    model.train()
    tokens = generate(model, PROMPT, max_new_tokens=5, temperature=0)
    assert model.training  # nothing has run yet
    first = next(tokens)
    assert isinstance(first, int)
    assert model.training and not torch.is_inference_mode_enabled()  # between tokens
    rest = list(tokens)
    assert model.training and len(rest) <= 4
    model.eval()
    list(generate(model, PROMPT, max_new_tokens=2, temperature=0))
    assert not model.training


def test_zero_new_tokens_yields_nothing(model):
    assert list(generate(model, PROMPT, max_new_tokens=0)) == []


@pytest.mark.parametrize(
    "prompt, kwargs, message",
    [
        ([], dict(max_new_tokens=3), "empty"),
        ([1] * 49, dict(max_new_tokens=3), "max_seq_len"),
        (PROMPT, dict(max_new_tokens=-1), "max_new_tokens"),
        (PROMPT, dict(max_new_tokens=3, temperature=-1.0), "temperature"),
        (PROMPT, dict(max_new_tokens=3, top_p=2.0), "top_p"),
    ],
)
def test_bad_arguments_raise_before_the_first_token(model, prompt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompt, **kwargs)  # no next(): checked at the call
