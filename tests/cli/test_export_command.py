"""`stlm export`: each family's formats, one-line refusals, nothing half-written, sentinel prompts."""

from __future__ import annotations

import pytest

from stlm import api
from stlm.cli.main import main
from stlm.tokenizers import ByteTokenizer
from tests.interop.export_runs import save_run


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_tiny_models(one_thread):
    yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory, decoder_export_run, t5_export_run):
    return {
        "decoder": decoder_export_run,
        "t5": t5_export_run,
        "pooled": save_run(tmp_path_factory.mktemp("runs"), "pooled-tiny", {}, ByteTokenizer(), std=0.02),
    }


def test_export_writes_the_folder_and_reports_it(runs, tmp_path, capsys):
    pytest.importorskip("gguf")
    out = tmp_path / "gguf"
    assert main(["export", str(runs["decoder"]), "--format", "gguf", "--dtype", "q8_0", "--out", str(out)]) == 0
    assert "model.gguf" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["model.gguf"]
    assert [p.name for p in tmp_path.iterdir()] == ["gguf"]  # no temporary folder left beside it


@pytest.mark.parametrize(
    ("family", "fmt", "dtype", "message"),
    [
        ("t5", "gguf", None, "t5 models cannot be exported as gguf: they export to ct2, hf, onnx only"),
        ("pooled", "onnx", None, "pooled models cannot be exported as onnx: they export to no format"),
        ("decoder", "gguf", "int8", "--dtype int8 is not one gguf export takes for this model: f32, f16, q8_0"),
    ],
)
def test_unsupported_pairs_are_one_line(runs, tmp_path, capsys, family, fmt, dtype, message):
    args = ["export", str(runs[family]), "--format", fmt, "--out", str(tmp_path / "out")]
    assert main(args + (["--dtype", dtype] if dtype else [])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_out_inside_the_run_or_existing_is_refused(runs, tmp_path, capsys):
    run = runs["decoder"]
    assert main(["export", str(run), "--format", "onnx", "--out", str(run / "exported")]) == 2
    assert "lies inside the run" in capsys.readouterr().err and not (run / "exported").exists()
    assert main(["export", str(run), "--format", "onnx", "--out", str(run / "checkpoints" / "x")]) == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_a_failing_writer_leaves_nothing(runs, tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from stlm.interop import gguf

    def half_then_fail(model, tokenizer, path, dtype="f32", name="stlm"):
        path.write_bytes(b"GGUF half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf, "export_gguf", half_then_fail)
    assert main(["export", str(runs["decoder"]), "--format", "gguf", "--out", str(tmp_path / "out")]) == 2
    assert not any(tmp_path.iterdir())


def test_t5_prompt_reads_sentinel_markup(runs):
    model = api.load(runs["t5"], device="cpu")
    prompt = "The <extra_id_0> walks in <extra_id_1> park"
    tok = model.tokenizer
    ids = [*tok.encode("The"), tok.sentinel_id(0), *tok.encode("walks in"), tok.sentinel_id(1), *tok.encode("park"), 1]
    assert model.family.prompt_ids(tok, prompt) == ids
    greedy = model.family.generate_greedy(model.module, [ids], eos_id=1, max_new_tokens=12)[0]
    plain = model.family.generate_greedy(model.module, [tok.encode(prompt, eos=True)], eos_id=1, max_new_tokens=12)[0]
    assert greedy != plain  # the markup changes what the model reads
    assert model.generate(prompt, greedy=True, max_new_tokens=12) == tok.decode(greedy)
