"""Checkpoints written before the family-row redesign load and compute exactly as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stlm import checkpoint as ckpt_io
from stlm.cli.main import main
from stlm.evaluation.scoring import score_continuations

OLD = Path(__file__).parent / "fixtures" / "old-layout"
EXPECTED = json.loads((OLD / "expected.json").read_text())


@pytest.mark.parametrize("name", ["decoder", "pooled", "t5"])
def test_old_runs_load_and_compute_what_they_did(name, one_thread):
    loaded = ckpt_io.load(OLD / name)
    assert loaded.family.name == name and loaded.step == 3
    assert loaded.path == ckpt_io.latest_checkpoint(OLD / name)
    prompt = loaded.family.prompt_ids(loaded.tokenizer, "The quick")
    ids = list(
        loaded.family.stream(loaded.model, prompt, eos_id=loaded.tokenizer.eos_id, max_new_tokens=12, temperature=0.0)
    )
    assert ids == EXPECTED[name]["greedy_ids"]
    score = score_continuations(loaded.model, loaded.tokenizer, loaded.family, [("The quick", " brown fox")])[0]
    assert score.logprob == pytest.approx(EXPECTED[name]["logprob"], abs=1e-4)


@pytest.mark.parametrize("name", ["decoder", "pooled", "t5"])
def test_the_run_record_reads_back_as_it_was_written(name):
    raw = json.loads((ckpt_io.latest_checkpoint(OLD / name) / "config.json").read_text())
    record = ckpt_io.RunRecord.from_dict(raw)
    assert record.to_dict() == raw
    assert record.model_name == f"fixture-{name}"


def test_old_runs_work_through_the_cli(tmp_path, capsys, one_thread):
    run = shutil.copytree(OLD / "decoder", tmp_path / "decoder")  # evaluate writes RUN/evals: never into the repo
    text = tmp_path / "notes.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n", encoding="utf-8")
    assert main(["evaluate", str(run), "--task", "bpb", "--file", str(text), "--quiet"]) == 0
    assert "bits per byte" in capsys.readouterr().out
    assert main(["generate", str(OLD / "t5"), "--prompt", "The quick", "--greedy", "--max-new-bytes", "4"]) == 0
    assert capsys.readouterr().out.strip()
