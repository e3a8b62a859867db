"""Pooled generation: cached byte-by-byte decoding equals the uncached model, for every boundary rule."""

from __future__ import annotations

import pytest
import torch

from stlm.generation.pooled import generate
from stlm.models.byte_decoder import PooledByteConfig, PooledByteLM
from stlm.models.decoder import DecoderConfig, DecoderLM
from stlm.tokenizers.byte import BOS_ID, EOS_ID

RULES = ["space", "fixed:1", "fixed:3", "entropy"]
# A finished document, then the start of a second one: generation continues inside document 2.
PROMPT = [BOS_ID, *b"The cat sat on the mat.", EOS_ID, BOS_ID, *b"Hello, wor"]
FIT_TEXT = [BOS_ID, *(b"the quick brown fox jumps over the lazy dog. " * 40), EOS_ID]


def make_model(boundary: str, max_seq_len: int = 128) -> PooledByteLM:
    torch.manual_seed(0)
    cfg = PooledByteConfig(
        d_local=32,
        n_enc_layers=1,
        n_dec_layers=1,
        local_heads=2,
        local_window=16,
        d_global=48,
        n_global_layers=2,
        global_heads=2,
        hash_buckets=64,
        max_patch_len=5,
        max_seq_len=max_seq_len,
        boundary=boundary,
    )
    model = PooledByteLM(cfg)
    if boundary == "entropy":
        model.fit_boundaries(FIT_TEXT, target_patch_len=3.0)
    with torch.no_grad():
        model.no_patch.normal_()
    return model


def greedy_reference(model: PooledByteLM, prompt: list[int], n: int) -> list[int]:
    """Argmax of the full, uncached forward on the growing prefix."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("boundary", RULES)
def test_greedy_equals_argmax_of_full_forward(boundary):
    model = make_model(boundary)
    out = list(generate(model, PROMPT, max_new_tokens=40, temperature=0, stop_ids=()))
    assert out == greedy_reference(model, PROMPT, 40)


@pytest.mark.parametrize("boundary", ["space", "fixed:3"])
def test_greedy_from_a_one_byte_prompt_and_through_new_documents(boundary):
    model = make_model(boundary)
    # Force BOS/EOS into the continuation: a stop set that never fires, and a prompt ending in EOS.
    for prompt in ([BOS_ID], [BOS_ID, *b"ab cd", EOS_ID]):
        out = list(generate(model, prompt, max_new_tokens=25, temperature=0, stop_ids=()))
        assert out == greedy_reference(model, prompt, 25)


def test_core_steps_only_when_patches_close():
    model = make_model("space")
    calls = []
    model.core[0].register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
    out = list(generate(model, PROMPT, max_new_tokens=30, temperature=0, stop_ids=()))
    prefill, steps = calls[0], calls[1:]
    assert prefill > 1 and all(n == 1 for n in steps)  # one patch at a time after the prefill
    assert 0 < len(steps) < len(out)  # the core ran for some bytes, not all


def test_stops_after_yielding_a_stop_id_and_when_the_context_is_full():
    model = make_model("space", max_seq_len=48)
    first = greedy_reference(model, PROMPT, 1)[0]
    assert list(generate(model, PROMPT, max_new_tokens=10, temperature=0, stop_ids=(first,))) == [first]
    out = list(generate(model, PROMPT, max_new_tokens=100, temperature=0, stop_ids=()))
    assert len(out) == 48 - len(PROMPT) + 1
    assert out == greedy_reference(model, PROMPT, len(out))


def test_seeded_sampling_is_reproducible_and_mode_is_restored():
    model = make_model("space")
    model.train()
    run = lambda seed: list(generate(model, PROMPT, max_new_tokens=20, seed=seed, top_k=50, stop_ids=()))  # noqa: E731
    assert run(3) == run(3) and run(3) != run(4)
    assert model.training


def test_rejects_other_models_and_bad_arguments():
    decoder = DecoderLM(DecoderConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=16))
    with pytest.raises(TypeError, match="PooledByteLM"):
        generate(decoder, PROMPT, max_new_tokens=3)
    with pytest.raises(ValueError, match="empty"):
        generate(make_model("space"), [], max_new_tokens=3)
