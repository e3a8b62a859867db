"""A checkpoint is untrusted data: what it records never names a file outside its folder,
its config is validated as data, and torch's advice never reaches a user (issue 15, item 4)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from stlm import api
from stlm import checkpoint as ckpt_io
from stlm.cli.main import main
from stlm.errors import UserError
from stlm.interop import export_hf_t5, load_hf_t5
from stlm.models.t5 import T5Config, T5Model
from stlm.tokenizers import SentencePieceTokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def spiece_file(tmp_path_factory) -> Path:
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)[:60]]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("spiece") / "spiece", vocab_size=300)


@pytest.fixture
def hf_dir(tmp_path, spiece_file) -> Path:
    """A tiny Hugging Face T5 directory with its spiece.model."""
    torch.manual_seed(0)
    vocab = SentencePieceTokenizer(spiece_file).vocab_size
    cfg = T5Config(vocab_size=vocab, d_model=16, d_head=4, n_heads=2, d_ff=32, n_layers=1, n_decoder_layers=1)
    return export_hf_t5(T5Model(cfg), tmp_path / "hf", spiece=spiece_file)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    return err


def rewrite(ckpt: Path, edit) -> None:
    """Edit a checkpoint's config.json the way someone editing the folder would: manifest recomputed."""
    path = ckpt / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in list(manifest):
        if not (ckpt / name).is_file():
            del manifest[name]
            continue
        data = (ckpt / name).read_bytes()
        manifest[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def with_tokenizer(tokenizer):
    return lambda config: {**config, "tokenizer": tokenizer}


# --- tokenizer files live inside the checkpoint -------------------------------------------------


def test_an_imported_run_keeps_working_when_its_folder_moves(tmp_path, hf_dir):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    ckpt = run.checkpoint
    assert (ckpt / "spiece.model").read_bytes() == (hf_dir / "spiece.model").read_bytes()
    assert "spiece.model" in json.loads((ckpt / "manifest.json").read_text())
    assert json.loads((ckpt / "config.json").read_text())["tokenizer"]["spec"] == "spiece:spiece.model"
    before = api.load(run.dir, device="cpu").generate("def f", max_new_tokens=5, greedy=True)

    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run.dir, moved)
    after = api.load(moved, device="cpu")
    assert after.generate("def f", max_new_tokens=5, greedy=True) == before
    assert after.tokenizer.model_file.is_relative_to(moved.resolve())


def test_a_run_imported_before_the_copy_rule_still_loads_after_a_move(tmp_path, hf_dir):
    """Old imports recorded the absolute path of the run folder's spiece.model, and had no copy in the checkpoint."""
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    shutil.move(run.checkpoint / "spiece.model", run.dir / "spiece.model")
    old_spec = {"name": "spiece", "spec": f"spiece:{(run.dir / 'spiece.model').resolve()}"}
    rewrite(run.checkpoint, with_tokenizer(old_spec))
    assert api.load(run.dir, device="cpu").tokenizer.vocab_size > 256

    moved = tmp_path / "moved"
    shutil.move(run.dir, moved)
    loaded = api.load(moved, device="cpu")
    assert loaded.tokenizer.model_file == (moved / "spiece.model").resolve()


@pytest.mark.parametrize("outside", ["/etc/passwd", "OTHER"])
def test_hf_export_never_copies_a_file_the_record_names_outside_the_run(tmp_path, hf_dir, capsys, outside):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    secret = tmp_path / "secret.model"  # a real SentencePiece model, so only the folder rule refuses it
    shutil.copyfile(hf_dir / "spiece.model", secret)
    target = str(secret) if outside == "OTHER" else outside
    (run.checkpoint / "spiece.model").unlink()
    rewrite(run.checkpoint, with_tokenizer({"name": "spiece", "spec": f"spiece:{target}"}))
    err = one_line_error(capsys, ["hf-export", str(run.dir), "--out", str(tmp_path / "export")])
    assert "outside" in err or "not a file inside" in err
    assert "hf-import" in err  # says how to fix it
    assert not (tmp_path / "export" / "spiece.model").exists()


def test_a_relative_path_climbing_out_of_the_checkpoint_is_refused(tmp_path, hf_dir):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    shutil.copyfile(hf_dir / "spiece.model", tmp_path / "secret.model")
    (run.checkpoint / "spiece.model").unlink()
    rewrite(run.checkpoint, with_tokenizer({"name": "spiece", "spec": "spiece:../../../secret.model"}))
    with pytest.raises(UserError, match="inside its run folder"):
        api.load(run.dir, device="cpu")


def test_a_symlink_in_the_checkpoint_pointing_outside_is_refused(tmp_path, hf_dir):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    shutil.copyfile(hf_dir / "spiece.model", tmp_path / "secret.model")
    (run.checkpoint / "spiece.model").unlink()
    (run.checkpoint / "spiece.model").symlink_to(tmp_path / "secret.model")
    rewrite(run.checkpoint, lambda config: config)
    with pytest.raises(UserError, match="inside its run folder"):
        api.load(run.dir, device="cpu")


def test_a_manifest_naming_a_file_outside_the_checkpoint_is_refused(tiny_run):
    ckpt = ckpt_io.latest_checkpoint(tiny_run)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["../../../../etc/passwd"] = {"bytes": 1, "sha256": "0"}
    copy = tiny_run.parent / "manifest-outside" / "checkpoints" / ckpt.name
    shutil.copytree(ckpt, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="not a file in the checkpoint"):
        ckpt_io.verify_checkpoint(copy)


def test_shard_paths_in_an_index_stay_inside_the_directory(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=48, d_model=16, d_head=4, n_heads=2, d_ff=32, n_layers=1, n_decoder_layers=1)
    directory = export_hf_t5(T5Model(cfg), tmp_path / "hf")
    tensors = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    outside = tmp_path / "outside.safetensors"
    save_file(tensors, str(outside))
    for shard in (str(outside), "../outside.safetensors"):
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": dict.fromkeys(tensors, shard)})
        )
        with pytest.raises(UserError, match="outside"):
            load_hf_t5(directory)
    shutil.copyfile(outside, directory / "inside.safetensors")
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(tensors, "inside.safetensors")})
    )
    assert load_hf_t5(directory)[1] == cfg


# --- the config is data, validated --------------------------------------------------------------


def copy_run(tiny_run: Path, dest: Path) -> Path:
    shutil.copytree(tiny_run, dest)
    return dest


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def corpora_read(monkeypatch) -> list[str]:
    """Every corpus spec the data path loads documents from, in this test."""
    from stlm.data import shards

    read: list[str] = []
    real = shards.load_documents

    def spy(spec, *args, **kwargs):
        read.append(str(spec))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(shards, "load_documents", spy)
    return read


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (with_tokenizer("byte"), "tokenizer"),
        (with_tokenizer(["byte"]), "tokenizer"),
        (with_tokenizer({"name": 7}), "tokenizer.name"),
        (with_tokenizer({"name": "bpe", "json": 3}), "tokenizer.json"),
        (with_tokenizer({"name": "bpe", "spec": "bpe:/etc/passwd"}), "BPE"),
        (lambda config: {**config, "model_config": "decoder-tiny"}, "model_config"),
        (lambda config: {**config, "run": "fast"}, "'run'"),
        (lambda config: {**config, "data": [1, 2]}, "'data'"),
    ],
)
def test_a_malformed_checkpoint_config_is_one_clear_error(tmp_path, tiny_run, capsys, edit, fragment):
    run = copy_run(tiny_run, tmp_path / "run")
    rewrite(ckpt_io.latest_checkpoint(run), edit)
    err = one_line_error(capsys, ["generate", str(run), "--prompt", "a", "--max-new-bytes", "2"])
    assert fragment in err, err


def test_torch_advice_never_reaches_the_user(tmp_path, tiny_run, corpus_dir, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    ckpt = ckpt_io.latest_checkpoint(run)
    # A pickle that weights_only refuses: torch's message then suggests weights_only=False.
    torch.save({"rng_cpu": torch.get_rng_state(), "note": Path("x")}, ckpt / "trainer.pt")
    rewrite(ckpt, lambda config: config)
    err = one_line_error(capsys, ["train", "--resume", str(run), "--data", str(corpus_dir), "--steps", "10"])
    assert "trainer.pt" in err
    assert "weights_only" not in err and "re-running" not in err.lower(), err


def test_a_trainer_state_that_is_not_a_table_is_one_clear_error(tmp_path, tiny_run, corpus_dir, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    ckpt = ckpt_io.latest_checkpoint(run)
    torch.save([torch.zeros(1)], ckpt / "trainer.pt")
    rewrite(ckpt, lambda config: config)
    err = one_line_error(capsys, ["train", "--resume", str(run), "--data", str(corpus_dir), "--steps", "10"])
    assert "trainer.pt" in err


# --- sizes are bounded before allocation -------------------------------------------------------


@pytest.fixture
def memory_64gb(monkeypatch):
    """A machine with 64 GB of memory, whatever this one has; a model built anyway fails the test."""
    from stlm import runtime
    from stlm.families.base import ModelFamily

    monkeypatch.setattr(runtime, "machine_memory", lambda: 64 * 10**9)

    def never(self, cfg):
        raise AssertionError("a model too large for memory was built")

    monkeypatch.setattr(ModelFamily, "build", lambda self, cfg: (self.check_fits(cfg), never(self, cfg)))


def test_a_model_too_large_for_memory_is_refused_with_its_size(tmp_path, corpus_dir, cache_dir, capsys, memory_64gb):
    argv = ["train", "--model", "decoder-tiny", "--data", str(corpus_dir), "--cache-dir", str(cache_dir)]
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "run"), "--set", "model.d_model=131072"])
    assert "3,298.9 GB" in err and "64.0 GB" in err, err
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_config_too_large_for_memory_is_refused(tmp_path, tiny_run, capsys, memory_64gb):
    run = copy_run(tiny_run, tmp_path / "run")
    for ckpt in ckpt_io.list_checkpoints(run):
        rewrite(ckpt, lambda config: {**config, "model_config": {**config["model_config"], "d_model": 131072}})
    for argv in (["generate", str(run), "--prompt", "a"], ["train", "--resume", str(run), "--steps", "20"]):
        assert "GB of fp32 weights" in one_line_error(capsys, argv)


def test_a_model_that_fits_is_built(memory_64gb):
    from stlm import registry

    family, cfg = registry.resolve_model("decoder-tiny")
    family.check_fits(cfg)


def test_thread_counts_are_clamped_to_the_machine(capsys):
    from stlm.config import RuntimeConfig
    from stlm.runtime import cpu_count, resolve_runtime

    before = torch.get_num_threads()
    try:
        resolve_runtime(RuntimeConfig(device="cpu", threads=10_000_000))
        assert torch.get_num_threads() == cpu_count()
        assert f"using {cpu_count()}" in capsys.readouterr().err
        resolve_runtime(RuntimeConfig(device="cpu", threads=1))
        assert torch.get_num_threads() == 1 and capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


# --- cache and data locations come from the user ---------------------------------------------


def with_data(**changes):
    def edit(config):
        run = config["run"]
        return {**config, "run": {**run, "data": {**run["data"], **changes}}}

    return edit


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_evaluate_never_writes_to_a_cache_dir_the_checkpoint_names(tmp_path, tiny_run, corpus_dir, capsys, user_cache):
    run = copy_run(tiny_run, tmp_path / "run")
    elsewhere = tmp_path / "not-yours"
    rewrite(ckpt_io.latest_checkpoint(run), with_data(cache_dir=str(elsewhere)))
    argv = ["evaluate", str(run), "--data", str(corpus_dir), "--max-ids", "500", "--context", "32", "--quiet"]
    assert main(argv) == 0
    assert not elsewhere.exists()
    assert any((user_cache / "stlm").rglob("meta.json"))  # the tokens went to the user's own cache
    mine = tmp_path / "mine"  # or to the one the user names
    assert main([*argv, "--cache-dir", str(mine)]) == 0
    assert any(mine.rglob("meta.json")) and not elsewhere.exists()


def test_evaluate_reads_no_corpus_path_the_checkpoint_names(tmp_path, tiny_run, capsys, user_cache, corpora_read):
    """A recorded local corpus is named again by the user; the file the checkpoint names is never opened."""
    run = copy_run(tiny_run, tmp_path / "run")
    secret = tmp_path / "secret.txt"
    secret.write_text("a secret the checkpoint points at\n" * 50, encoding="utf-8")
    rewrite(ckpt_io.latest_checkpoint(run), with_data(source=str(secret)))
    err = one_line_error(capsys, ["evaluate", str(run), "--max-ids", "500", "--context", "32"])
    assert f"--data {secret}" in err and "reads no path a checkpoint names" in err
    assert corpora_read == []


def test_evaluate_names_a_recorded_corpus_that_is_gone(tmp_path, tiny_run, capsys, user_cache):
    run = copy_run(tiny_run, tmp_path / "run")
    rewrite(ckpt_io.latest_checkpoint(run), with_data(source=str(tmp_path / "gone")))
    err = one_line_error(capsys, ["evaluate", str(run), "--max-ids", "500", "--context", "32"])
    assert "gone" in err and "--data" in err


def test_resume_writes_to_the_users_cache_not_the_recorded_one(tmp_path, tiny_run, corpus_dir, capsys, user_cache):
    run = copy_run(tiny_run, tmp_path / "run")
    elsewhere = tmp_path / "not-yours"
    for ckpt in ckpt_io.list_checkpoints(run):
        rewrite(ckpt, with_data(cache_dir=str(elsewhere)))
    mine = tmp_path / "mine"
    argv = ["train", "--resume", str(run), "--data", str(corpus_dir), "--steps", "9", "--cache-dir", str(mine)]
    assert main([*argv, "--quiet"]) == 0
    assert not elsewhere.exists() and any(mine.rglob("meta.json"))
    assert ckpt_io.latest_checkpoint(run).name == ckpt_io.checkpoint_name(9)
    assert (run / "report.md").is_file()


def test_resume_reads_no_corpus_path_the_checkpoint_names(tmp_path, tiny_run, corpus_dir, capsys, corpora_read):
    """A run on a local corpus resumes only when the user names its data again, wherever it is now, and only
    on the same documents; a path the checkpoint names is never opened."""
    import shutil

    run = copy_run(tiny_run, tmp_path / "run")
    secret = tmp_path / "secret.txt"
    secret.write_text("a secret the checkpoint points at\n" * 50, encoding="utf-8")
    for ckpt in ckpt_io.list_checkpoints(run):
        rewrite(ckpt, with_data(source=str(secret)))
    before = tree_bytes(run)
    err = one_line_error(capsys, ["train", "--resume", str(run), "--steps", "9"])
    assert f"--data {secret}" in err and "reads no path a checkpoint names" in err
    err = one_line_error(capsys, ["train", "--resume", str(run), "--steps", "9", "--data", str(tmp_path / "gone")])
    assert "gone does not exist" in err
    other = tmp_path / "other"
    other.mkdir()
    for i in range(30):
        (other / f"{i}.txt").write_text(f"other documents entirely, number {i}\n" * 20, encoding="utf-8")
    err = one_line_error(capsys, ["train", "--resume", str(run), "--steps", "9", "--data", str(other), "--quiet"])
    assert "holds other documents" in err
    assert tree_bytes(run) == before and str(secret) not in corpora_read
    moved = shutil.copytree(corpus_dir, tmp_path / "moved-corpus")  # the run's own data, moved: it resumes
    assert main(["train", "--resume", str(run), "--steps", "9", "--data", str(moved), "--quiet"]) == 0
    assert ckpt_io.latest_checkpoint(run).name == ckpt_io.checkpoint_name(9)


def test_a_run_on_a_built_in_corpus_resumes_on_it_by_name_only(tmp_path, tiny_run, corpus_dir, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    for ckpt in ckpt_io.list_checkpoints(run):
        rewrite(ckpt, with_data(source="pydocs"))
    err = one_line_error(capsys, ["train", "--resume", str(run), "--steps", "9", "--data", str(corpus_dir)])
    assert f"was trained on pydocs; a run resumes on its own data, not on {corpus_dir}" in err


def test_hf_import_of_a_pickle_gives_no_torch_advice(tmp_path):
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=48, d_model=16, d_head=4, n_heads=2, d_ff=32, n_layers=1, n_decoder_layers=1)
    directory = export_hf_t5(T5Model(cfg), tmp_path / "hf")
    (directory / "model.safetensors").unlink()
    torch.save({"shared.weight": Path("x")}, directory / "pytorch_model.bin")
    with pytest.raises(UserError) as err:
        load_hf_t5(directory)
    message = str(err.value)
    assert "pytorch_model.bin" in message and "\n" not in message
    assert "weights_only" not in message and "re-running" not in message.lower(), message


def test_a_checkpoint_stores_the_model_after_the_one_it_came_from_was_pruned(tmp_path, hf_dir):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    loaded = ckpt_io.load(run.dir)
    record = ckpt_io.RunRecord(loaded.family, loaded.model_config, loaded.tokenizer.to_dict(), {})
    shutil.rmtree(run.checkpoint)  # what pruning does once newer checkpoints exist
    ckpt = ckpt_io.save_checkpoint(run.dir, 5, model=loaded.model, optimizer=None, config=record, state={}, keep=2)
    ckpt_io.verify_checkpoint(ckpt)
    assert (ckpt / "spiece.model").read_bytes() == (hf_dir / "spiece.model").read_bytes()
    assert ckpt_io.load(run.dir).tokenizer.sha256 == loaded.tokenizer.sha256


def test_a_symlinked_tokenizer_file_in_the_target_folder_is_replaced_not_written_through(tmp_path, hf_dir):
    run = api.import_hf_t5(hf_dir, tmp_path / "run")
    loaded = ckpt_io.load(run.dir)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "new-run"
    out.mkdir()
    (out / "spiece.model").symlink_to(victim)
    ckpt_io.write_run_config(
        out, ckpt_io.RunRecord(loaded.family, loaded.model_config, loaded.tokenizer.to_dict()).to_dict()
    )
    assert victim.read_text() == "keep me"
    assert not (out / "spiece.model").is_symlink()
