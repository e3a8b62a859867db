"""`stlm evaluate --task ...`: results files with provenance whose hashes check out."""

from __future__ import annotations

import hashlib
import json

import pytest

from stlm.cli.main import main
from tests.conftest import SHARED_DATA

MC = [
    {"context": "The sky is", "choices": ["blue.", "made of cheese."], "gold": 0},
    {"context": "Fire is", "choices": ["cold.", "hot.", "square."], "gold": 1},
]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mc_task_writes_json_and_markdown_with_traceable_provenance(capsys, tiny_run, tmp_path):
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MC), encoding="utf-8")
    code, out, err = run(
        capsys, "evaluate", tiny_run, "--task", f"mc:{data}", "--out", tmp_path / "evals", "--batch-size", 3, "--quiet"
    )
    assert code == 0, err
    ckpt = sorted((tiny_run / "checkpoints").iterdir())[-1]
    record = json.loads((tmp_path / "evals" / f"mc-items-{ckpt.name}.json").read_text())
    page = (tmp_path / "evals" / f"mc-items-{ckpt.name}.md").read_text()
    assert "accuracy" in out and "| **this model** |" in out and "| **this model** |" in page
    assert record["metrics"]["items"] == 2 and 0 <= record["metrics"]["accuracy"] <= 100
    prov = record["provenance"]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert prov["checkpoint"]["path"] == str(ckpt.resolve())
    assert prov["checkpoint"]["manifest_sha256"] == _sha256(ckpt / "manifest.json")
    assert (
        prov["checkpoint"]["weights_sha256"]
        == manifest["model.safetensors"]["sha256"]
        == _sha256(ckpt / "model.safetensors")
    )
    assert prov["checkpoint"]["step"] == 8
    assert prov["data"] == [{"path": str(data.resolve()), "bytes": data.stat().st_size, "sha256": _sha256(data)}]
    assert prov["model"]["name"] == "decoder-tiny" and prov["model"]["family"] == "decoder"
    from stlm import registry

    assert prov["model"]["n_params"] == registry.count_params(*registry.get_config("decoder-tiny"))
    assert prov["settings"]["batch_size"] == 3 and prov["settings"]["limit"] is None
    assert prov["stlm_version"] and prov["time"].endswith("Z") and prov["versions"]["torch"]


def test_bpb_task_records_context_stride_and_file_hash(capsys, tiny_run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("héllo wörld\n" * 20, encoding="utf-8")
    code, out, _ = run(
        capsys,
        "evaluate",
        tiny_run,
        "--task",
        "bpb",
        "--file",
        text,
        "--context",
        32,
        "--stride",
        16,
        "--json",
        tmp_path / "r.json",
        "--quiet",
    )
    assert code == 0 and "context 32, stride 16" in out
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["details"]["n_bytes"] == len(text.read_text(encoding="utf-8").encode("utf-8"))
    assert record["provenance"]["settings"]["context"] == 32 and record["provenance"]["data"][0]["sha256"] == _sha256(
        text
    )
    assert (tiny_run / "evals").is_dir()  # default output folder: next to the checkpoints


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"evaluation data folder {SHARED_DATA} is absent")
def test_blimp_and_piqa_on_the_real_files_with_a_limit(capsys, tiny_run, tmp_path, one_thread):
    code, out, err = run(
        capsys,
        "evaluate",
        tiny_run,
        "--task",
        "blimp",
        "--task",
        "piqa",
        "--limit",
        2,
        "--data-dir",
        SHARED_DATA,
        "--out",
        tmp_path,
        "--quiet",
    )
    assert code == 0, err
    assert "over 134 pairs in 67 phenomena" in out and "5-gram | 61.2" in out
    assert "piqa accuracy" in out and "over 2 items" in out
    record = json.loads(next(tmp_path.glob("blimp-*.json")).read_text())
    assert len(record["details"]["per_phenomenon"]) == 67 and len(record["provenance"]["data"]) == 67
    assert record["provenance"]["settings"]["limit_per_phenomenon"] == 2


def test_missing_data_dir_and_unknown_task_are_one_clear_line(capsys, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("STLM_DATA_DIR", str(tmp_path / "nowhere"))
    code, _, err = run(capsys, "evaluate", tiny_run, "--task", "blimp")
    assert code == 2 and "STLM_DATA_DIR" in err and "nowhere" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "evaluate", tiny_run, "--task", "hellaswag")
    assert code == 2 and "unknown task 'hellaswag'" in err and "mc:PATH" in err
    code, _, err = run(capsys, "evaluate", tiny_run, "--task", f"mc:{tmp_path / 'none.jsonl'}")
    assert code == 2 and "does not exist" in err


def test_evaluations_of_different_data_or_splits_keep_their_own_result_files(capsys, tiny_run, tmp_path, corpus_dir):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat sat on the mat. " * 20, encoding="utf-8")
    b.write_text("héllo wörld\n" * 20, encoding="utf-8")
    out = tmp_path / "evals"
    runs = [
        ("--split", "val", "--data", corpus_dir),
        ("--split", "train", "--data", corpus_dir),
        ("--file", a),
        ("--file", b),
    ]
    for flags in runs:
        code, _, err = run(
            capsys, "evaluate", tiny_run, *flags, "--max-ids", 3000, "--context", 32, "--out", out, "--quiet"
        )
        assert code == 0, err
    ckpt = sorted((tiny_run / "checkpoints").iterdir())[-1].name
    corpus = json.loads((tiny_run / "config.json").read_text())["run"]["data"]["source"].rstrip("/").rsplit("/", 1)[-1]
    texts = {}
    for stem in (f"bpb-{corpus}-val", f"bpb-{corpus}-train", "bpb-a.txt", "bpb-b.txt"):
        record = json.loads((out / f"{stem}-ctx32-max3000-{ckpt}.json").read_text())
        assert (out / f"{stem}-ctx32-max3000-{ckpt}.md").is_file()
        texts[stem] = record["provenance"]["settings"]["text"]
    assert len(set(texts.values())) == 4 and len(list(out.glob("*.json"))) == 4  # nothing overwritten
    # Run again: the same evaluation lands in the same file.
    run(capsys, "evaluate", tiny_run, "--file", a, "--max-ids", 3000, "--context", 32, "--out", out, "--quiet")
    assert len(list(out.glob("*.json"))) == 4


def test_bpb_of_a_file_prints_and_records_the_references_beside_it(capsys, tiny_run, tmp_path):
    import math
    from collections import Counter

    text = tmp_path / "t.txt"
    text.write_text("naïve café, the cat sat on the mat.\n" * 30, encoding="utf-8")
    code, out, _ = run(capsys, "evaluate", tiny_run, "--file", text, "--json", tmp_path / "r.json", "--quiet")
    assert code == 0
    raw = text.read_bytes()
    unigram = -sum(c / len(raw) * math.log2(c / len(raw)) for c in Counter(raw).values())
    references = json.loads((tmp_path / "r.json").read_text())["details"]["references"]
    assert references["uniform"] == 8.0 and references["unigram"] == pytest.approx(unigram)
    assert "token_unigram" not in references  # a byte model: the token entropy is the byte entropy
    assert f"| order-0 (unigram) entropy of the same bytes | {unigram:.4f} |" in out
    assert "| uniform guess over 256 bytes | 8.0000 |" in out
    assert f"unigram {unigram:.3f}" in out.splitlines()[0]  # the summary line too
    assert "order-0 (unigram) entropy of the same bytes" in (tmp_path / "r.md").read_text()
