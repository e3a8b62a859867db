"""Architecture settings from a recipe or --set (model.<key>) reach the built model, its count and its checkpoint."""

import pytest

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import RunConfig
from stlm.errors import UserError
from stlm.training.loop import resume, train

from ..conftest import tiny_config


def test_width_and_depth_from_set_reach_the_checkpoint_with_the_exact_count(
    tmp_path, corpus_dir, cache_dir, one_thread
):
    cfg = tiny_config(corpus_dir, cache_dir, steps=2).with_overrides({"model.d_model": "96", "model.n_layers": "5"})
    assert cfg.model == "decoder-tiny" and cfg.arch == {"d_model": "96", "n_layers": "5"}
    train(cfg, tmp_path / "run", stop_at=1, progress=False)
    loaded = ckpt_io.load(tmp_path / "run")
    assert (loaded.model_config.d_model, loaded.model_config.n_layers) == (96, 5)
    # Counted from the shapes alone: tied embedding V*D, per layer qkv + out 4*D*D, SwiGLU 3*D*F and
    # two norm gains, a final norm; d_ff follows the new width (8/3 * 96 rounded up to 64s) as the
    # preset's was derived from its own.
    v, d, f, layers = 264, 96, 256, 5
    expected = v * d + layers * (4 * d * d + 3 * d * f + 2 * d) + d
    assert sum(p.numel() for p in loaded.model.parameters()) == expected
    assert registry.get_family("decoder").count_params(loaded.model_config) == expected
    # Resuming builds the model the checkpoint records, not the preset.
    assert resume(tmp_path / "run", overrides={"data.source": str(corpus_dir)}, progress=False).step == 2


def test_settings_the_preset_derived_follow_the_change_unless_given():
    family, preset = registry.resolve_model("decoder-tiny")
    assert preset.d_ff == 384  # derived from d_model 128
    assert family.with_arch(preset, {"d_model": "96"}).d_ff == 256
    assert family.with_arch(preset, {"d_model": "96", "d_ff": "100"}).d_ff == 100
    t5, debug = registry.resolve_model("t5-debug")
    assert t5.with_arch(debug, {"n_layers": "3"}).n_decoder_layers == 3  # decoder depth follows, as in the name grammar
    assert t5.with_arch(debug, {"n_layers": "3", "n_decoder_layers": "1"}).n_decoder_layers == 1
    pooled, tiny = registry.resolve_model("pooled-tiny")
    assert pooled.with_arch(tiny, {"d_global": "64"}).d_ff_global == 192


def test_pooled_sharing_and_boundary_settings_reach_the_model():
    family, preset = registry.resolve_model("pooled-tiny")
    _, changed = registry.resolve_model("pooled-tiny", {"boundary": "entropy", "share_ffn": "true"})
    model = family.build(changed)
    assert model.config.boundary_kind == "entropy" and model.config.share_ffn is True
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert n_params == family.count_params(changed)
    assert family.count_params(preset) - n_params == family.breakdown(preset)["sharing"]["share_ffn"]


def test_model_table_in_a_recipe_and_its_round_trip(tmp_path):
    from stlm.config import load_run_config

    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "pooled-tiny"\nboundary = "entropy"\nrepeat_blocks = 2\n', encoding="utf-8")
    cfg = load_run_config(recipe)
    assert cfg.model == "pooled-tiny" and cfg.arch == {"boundary": "entropy", "repeat_blocks": 2}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    recipe.write_text("[model]\nboundary = 'entropy'\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"\[model\] table needs name"):
        load_run_config(recipe)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"vocab_size": 100}, "model.vocab_size is not a decoder setting that can be changed"),
        ({"d_model": "wide"}, "model.d_model must be int"),
        ({"n_heads": 3}, "bad decoder model setting"),
    ],
)
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message) as err:
        registry.resolve_model("decoder-tiny", changes)
    assert "\n" not in str(err.value)


def test_settings_are_checked_before_any_work(tmp_path, corpus_dir, cache_dir):
    cfg = tiny_config(corpus_dir, cache_dir).with_overrides({"model.boundary": "entropy"})
    with pytest.raises(UserError, match="model.boundary is not a decoder setting"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_entropy_patch_length_and_hashed_ngram_sizes_are_settable():
    # The ladder's 3-6 variant is pooled-10m-hash with four settings changed, from the CLI's strings.
    _, changed = registry.resolve_model(
        "pooled-10m-hash",
        {"entropy_patch_len": "8", "max_patch_len": "16", "hash_ngrams": "3,4,5,6", "hash_buckets": "5760"},
    )
    assert changed == registry.resolve_model("pooled-10m-hash-long-3to6")[1]
    family, tiny = registry.resolve_model("pooled-tiny")
    _, listed = registry.resolve_model("pooled-tiny", {"hash_ngrams": [2, 5]})  # a recipe's TOML list
    assert listed.hash_ngrams == (2, 5)
    _, bracketed = registry.resolve_model("pooled-tiny", {"hash_ngrams": "[2, 5]"})
    assert bracketed == listed
    _, without = registry.resolve_model("pooled-tiny", {"hash_ngrams": ""})  # no hashed n-grams at all
    assert without.hash_ngrams == ()
    tables = family.breakdown(tiny)["hash_tables"]
    assert family.count_params(tiny) - family.count_params(without) == tables > 0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hash_ngrams": "1,2"}, "bad pooled model setting: .*sizes must be integers in 2..8"),
        ({"hash_ngrams": "3,x"}, "model.hash_ngrams must be int"),
        ({"hash_ngrams": 3}, "model.hash_ngrams must be a list"),
        ({"entropy_patch_len": "long"}, "model.entropy_patch_len must be float"),
    ],
)
def test_bad_pooled_settings_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message) as err:
        registry.resolve_model("pooled-tiny", changes)
    assert "\n" not in str(err.value)
