"""Baselines of the pooled byte models: BPE decoders with exactly the pooled core's parameters."""

from __future__ import annotations

import pytest

from stlm import registry
from stlm.errors import UserError
from stlm.models.byte_decoder.config import param_breakdown
from stlm.tokenizers import ByteTokenizer

# Written out so a change in shapes or in the counting formula fails here.
EXPECTED = {"bpe-tiny": (770_944, 1024, "pooled-tiny"), "bpe-10m": (10_203_840, 4096, "pooled-10m")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bpe_baselines_have_exact_counts_and_the_pooled_core(name):
    total, vocab, pooled = EXPECTED[name]
    family, cfg = registry.get_config(name)
    assert family == "decoder" and cfg.vocab_size == vocab and cfg.tie_embeddings
    assert registry.count_params(family, cfg) == total
    core = param_breakdown(registry.get_config(pooled)[1])["core"]
    assert total - vocab * cfg.d_model == core  # blocks + final norm == the pooled core (blocks + core norm)
    if name == "bpe-tiny":
        assert registry.build_model(family, cfg).num_params() == total


def test_unpooled_baseline_is_the_pooled_preset_with_one_byte_patches():
    pooled, unpooled = registry.get_config("pooled-10m")[1], registry.get_config("pooled-10m-unpooled")[1]
    assert param_breakdown(unpooled) == param_breakdown(pooled) and unpooled.boundary == "fixed:1"


def test_tokenizer_and_model_vocabularies_must_agree(tmp_path):
    from pydoc_data.topics import topics

    from stlm.tokenizers import train_bpe

    family, bpe_tiny = registry.get_config("bpe-tiny")
    with pytest.raises(UserError, match="vocabulary of 1024 ids.*train-tokenizer --vocab-size 1024"):
        registry.get_family(family).resolve_tokenizer("auto", bpe_tiny)
    with pytest.raises(UserError, match="has 264 ids but the decoder model's vocab_size is 1024"):
        registry.get_family(family).resolve_tokenizer("byte", bpe_tiny)
    path = train_bpe([topics[k] for k in sorted(topics)[:40]], 600).save(tmp_path / "tok.json")
    with pytest.raises(UserError, match="has 600 ids but the decoder model's vocab_size is 1024; they must agree"):
        registry.get_family(family).resolve_tokenizer(f"bpe:{path}", bpe_tiny)
    pooled_family, pooled = registry.get_config("pooled-tiny")
    with pytest.raises(UserError, match="pooled models read bytes"):
        registry.get_family(pooled_family).resolve_tokenizer(f"bpe:{path}", pooled)
    family, decoder_tiny = registry.get_config("decoder-tiny")
    with pytest.raises(UserError, match="this model reads bytes"):
        registry.get_family(family).resolve_tokenizer(f"bpe:{path}", decoder_tiny)
    assert isinstance(registry.get_family(pooled_family).resolve_tokenizer("auto", pooled), ByteTokenizer)
