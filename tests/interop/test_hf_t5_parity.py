"""Parity with Hugging Face transformers' T5: logits, greedy and beam generation, export.

Tiny random T5ForConditionalGeneration models are written to disk the way
released checkpoints are (config.json + model.safetensors, or an old-style
pytorch_model.bin that repeats the shared embedding under every name), loaded
with `load_hf_t5`, and compared with what transformers itself loads from the
same files. Weights are drawn with std 0.3 rather than T5's init so that the
random models produce varied text instead of one repeated token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from stlm.generation.seq2seq import generate_seq2seq  # noqa: E402
from stlm.interop import export_hf_t5, load_hf_t5  # noqa: E402

# fp32 logits agree to 1e-5 (relative to logits above 1: the gated-GELU case uses torch's fused
# tanh-GELU kernel where the reference spells the formula out, a last-bit difference per element).
TOL = dict(atol=1e-5, rtol=1e-5)
VOCAB = 64

CASES = {
    # T5 v1.0 / T5-Efficient: ReLU, tied embeddings (decoder output scaled by d_model**-0.5).
    "relu-tied": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    # T5 v1.1: gated GELU, separate LM head, no output scaling.
    "gated-untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # Few buckets and a short max distance, with sequences much longer than it; unequal
    # stacks and heads * d_kv != d_model.
    "buckets-8-20": dict(
        relative_attention_num_buckets=8, relative_attention_max_distance=20, num_decoder_layers=3, d_kv=12
    ),
}


def write_checkpoint(root: Path, case: str, fmt: str, eos: int = 1, seed: int = 0) -> Path:
    """A random HF T5 checkpoint directory in format "safetensors" or "bin" (made once per arguments)."""
    from safetensors.torch import save_file

    directory = root / f"{case}-{fmt}-eos{eos}-seed{seed}"
    if directory.exists():
        return directory

    settings = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=eos,
    )
    settings.update(CASES[case])
    tied = settings.pop("tie_word_embeddings", True)
    torch.manual_seed(seed)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**settings))
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    for key, tensor in state.items():
        if not key.endswith("layer_norm.weight"):
            tensor.normal_(0.0, 0.3, generator=generator)
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        state[alias] = state["shared.weight"].clone()
    if not tied:
        state["lm_head.weight"] = torch.randn(state["shared.weight"].shape, generator=generator) * 0.3

    directory.mkdir()
    config = hf.config.to_dict()
    config.pop("scale_decoder_outputs", None)  # as in released configs: tie_word_embeddings decides
    config.update(architectures=["T5ForConditionalGeneration"], tie_word_embeddings=tied)
    (directory / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        # save_pretrained's layout: the shared embedding once, lm_head only when separate.
        drop = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} | ({"lm_head.weight"} if tied else set())
        save_file({k: v.contiguous() for k, v in state.items() if k not in drop}, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return directory


def reference(directory: Path):
    hf = transformers.T5ForConditionalGeneration.from_pretrained(str(directory)).eval()
    return hf


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_t5")


def inputs(s: int, l: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, s), generator=g)
    dec = torch.randint(2, VOCAB, (2, l), generator=g)
    dec[:, 0] = 0
    mask = torch.ones(2, s, dtype=torch.long)
    mask[1, s * 2 // 3 :] = 0  # right padding on the second row
    return ids, dec, mask


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(root, case, fmt):
    directory = write_checkpoint(root, case, fmt)
    hf = reference(directory)
    if case == "gated-untied":
        assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr(), "reference must really be untied"
    model, cfg, spiece = load_hf_t5(directory)
    assert spiece is None and not model.training
    assert cfg.tie_embeddings == (case != "gated-untied")
    assert model.num_params() == sum(p.numel() for p in hf.parameters())
    long = case == "buckets-8-20"
    ids, dec, mask = inputs(60 if long else 12, 45 if long else 9)  # 60 and 45 > max distance 20
    with torch.no_grad():
        for attention_mask in (None, mask):
            expected = hf(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec).logits
            got = model(ids, dec, attention_mask)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, **TOL)


def sources(n: int = 3):
    g = torch.Generator().manual_seed(7)
    return [torch.randint(2, VOCAB, (1, int(torch.randint(3, 14, (1,), generator=g))), generator=g) for _ in range(n)]


# (weight seed, a token that model emits mid-sequence): used as EOS so that sequences end at
# EOS and not only at the length limit (hf.generate costs ~0.3 s a call: few sources).
GENERATING = {"relu-tied": (4, 13), "gated-untied": (0, 31)}


@pytest.mark.parametrize("case", ["relu-tied", "gated-untied"])
def test_greedy_generation_matches_transformers(root, case):
    seed, frequent = GENERATING[case]
    ended_at_eos = 0
    for eos in (1, frequent):
        directory = write_checkpoint(root, case, "safetensors", eos=eos, seed=seed)
        hf = reference(directory)
        model, _, _ = load_hf_t5(directory)
        for src in sources():
            expected = hf.generate(src, do_sample=False, num_beams=1, max_new_tokens=12)[0, 1:].tolist()
            got = generate_seq2seq(model, src, max_new_tokens=12)
            assert got == expected
            ended_at_eos += got[-1] == eos and len(got) < 12
    assert ended_at_eos, "the test should cover generation that stops at EOS"


@pytest.mark.parametrize("case, length_penalty", [("relu-tied", 1.0), ("gated-untied", 1.0), ("gated-untied", 0.5)])
def test_beam_search_matches_transformers(root, case, length_penalty):
    seed, eos = GENERATING[case]
    directory = write_checkpoint(root, case, "safetensors", eos=eos, seed=seed)
    hf = reference(directory)
    model, _, _ = load_hf_t5(directory)
    ended_at_eos = 0
    for src in sources():
        expected = hf.generate(src, do_sample=False, num_beams=3, max_new_tokens=10, length_penalty=length_penalty)[
            0, 1:
        ].tolist()
        got = generate_seq2seq(model, src, max_new_tokens=10, num_beams=3, length_penalty=length_penalty)
        assert got == expected
        ended_at_eos += got[-1] == eos and len(got) < 10
    assert ended_at_eos, "the test should cover beams that finish at EOS"


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_loads_in_transformers_with_identical_logits(root, tmp_path, case):
    model, cfg, _ = load_hf_t5(write_checkpoint(root, case, "bin", seed=3))
    spiece = tmp_path / "spiece.model"
    spiece.write_bytes(b"not really a sentencepiece model; export only copies it")
    out = export_hf_t5(model, tmp_path / "export", spiece=spiece)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "spiece.model"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"]
    assert config["tie_word_embeddings"] == cfg.tie_embeddings

    hf = reference(out)
    long = case == "buckets-8-20"
    ids, dec, mask = inputs(40 if long else 10, 30 if long else 7, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(
            hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
            model(ids, dec, mask),
            **TOL,
        )
    again, cfg_again, spiece_again = load_hf_t5(out)
    assert cfg_again == cfg and spiece_again == out / "spiece.model"
    mine, theirs = model.state_dict(), again.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("case", ["relu-tied", "gated-untied"])
def test_training_gradients_match_transformers(root, case):
    """Train mode with gradients takes another attention path (the position bias needs its
    gradient); loss and every parameter's gradient must match the reference's."""
    from stlm.interop import key_map

    directory = write_checkpoint(root, case, "safetensors")
    hf = reference(directory).train()
    model, cfg, _ = load_hf_t5(directory)
    model.train()
    ids, dec, mask = inputs(20, 9, seed=11)
    labels = torch.randint(2, VOCAB, dec.shape, generator=torch.Generator().manual_seed(12))
    for attention_mask in (None, mask):
        hf.zero_grad()
        model.zero_grad()
        hf_logits = hf(input_ids=ids, attention_mask=attention_mask, decoder_input_ids=dec).logits
        hf_loss = torch.nn.functional.cross_entropy(hf_logits.flatten(0, 1), labels.flatten())
        loss = torch.nn.functional.cross_entropy(model(ids, dec, attention_mask).flatten(0, 1), labels.flatten())
        hf_loss.backward()
        loss.backward()
        torch.testing.assert_close(loss, hf_loss, atol=1e-5, rtol=1e-5)
        hf_params = dict(hf.named_parameters(remove_duplicate=False))
        for ours, theirs in key_map(cfg):
            expected = torch.cat([hf_params[k].grad for k in theirs], dim=0)
            got = model.get_parameter(ours).grad
            # Relative to the tensor's largest gradient: the fused tanh-GELU backward rounds
            # differently from autograd through the reference's spelled-out formula, and CPUs
            # differ in how their fp32 kernels sum (1.4e-5 seen on an AMD EPYC without AVX-512);
            # a wrong gradient is off by its own size, not by 1e-4 of it.
            error = (got - expected).abs().max().item()
            assert error <= 1e-4 * max(1.0, expected.abs().max().item()), (ours, error)


def test_transformers_5_save_pretrained_of_a_v1_1_config(tmp_path):
    """transformers 5 ties every T5 head but skips the output scaling when the config said
    untied, and save_pretrained then writes one shared matrix: loaded as an untied model
    whose head starts as a copy of the embedding."""
    settings = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(transformers.T5Config(**settings)).save_pretrained(tmp_path)
    hf = reference(tmp_path)
    model, cfg, _ = load_hf_t5(tmp_path)
    assert not cfg.tie_embeddings
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()
    assert torch.equal(model.head.weight, model.embed.weight)
    ids, dec, mask = inputs(10, 6)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        torch.testing.assert_close(model(ids, dec, mask), expected, **TOL)
