"""Short fine-tuning runs end to end on tiny presets, early stopping, resuming, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from stlm import checkpoint as ckpt_io
from stlm.checkpoint import load
from stlm.cli.main import main
from stlm.cli.tables import print_finetune
from stlm.config import OptimConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.evaluation.record import file_sha256
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.loop import RESUME_SAFE_KEYS, batch_indices, finetune


def _cfg(train_file: Path, init: str = "decoder-tiny", **train) -> FinetuneConfig:
    settings = dict(steps=8, batch_size=8, eval_every=4, eval_examples=0, log_every=2)
    settings.update(train)
    return FinetuneConfig(
        init=init,
        task=TaskConfig(train_file=str(train_file), kind="classification", input_field="text", target_field="label"),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0),
        train=FinetuneTrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


def test_decoder_finetune_end_to_end(colours, tmp_path, one_thread):
    result = finetune(_cfg(colours), tmp_path / "run", progress=False)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res == result.results
    assert res["kind"] == "classification" and res["scored_on"] == "val"
    assert res["finetuned"]["loss"] < res["initial"]["loss"]  # it learned something
    assert set(res["finetuned"]) >= {"loss", "accuracy", "accuracy_logprob", "examples"}
    assert res["baselines"]["majority"]["label"] in ("red", "blue")
    # Scored on validation, bag of words has nothing to choose its smoothing on: the default, said plainly.
    assert res["baselines"]["bag_of_words"]["model"] == "multinomial naive Bayes, word 1+2-grams, alpha 1.0"
    prov = res["provenance"]
    assert {d["path"]: d["sha256"] for d in prov["data"]}[str(colours.resolve())] == file_sha256(colours)
    assert prov["checkpoint"]["weights_sha256"] and prov["model"]["name"] == "decoder-tiny"
    assert res["steps_run"] == 8 and res["best_step"] in (4, 8)
    # The best checkpoint loads like any run, and knows its tokenizer.
    loaded = load(tmp_path / "run" / "best")
    config, ckpt = loaded.record.to_dict(), loaded.path
    assert config["task"]["labels"] == ["blue", "red"] and ckpt == result.best_checkpoint
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8]
    # Per-example predictions of the scored split, beside the bag-of-words baseline's answers.
    rows = res["predictions"]
    assert len(rows) == res["finetuned"]["examples"] and [r["index"] for r in rows] == list(range(len(rows)))
    assert {r["prediction_logprob"] for r in rows} <= {"red", "blue"} and {r["target"] for r in rows} <= {"red", "blue"}
    # Each label's score is kept: its log-probability, the largest being the label chosen.
    for r in rows:
        assert set(r["label_scores"]) == {"red", "blue"} and all(v < 0 for v in r["label_scores"].values())
        assert max(r["label_scores"], key=r["label_scores"].get) == r["prediction_logprob"]
        # Whole answers (label + EOS) are distinct sequences: their probabilities sum to at most 1.
        assert math.fsum(math.exp(v) for v in r["label_scores"].values()) <= 1.0 + 1e-6
    right = sum(r["prediction_logprob"] == r["target"] for r in rows)
    assert res["finetuned"]["accuracy_logprob"] == pytest.approx(right / len(rows))
    bow_right = sum(r["bag_of_words"] == r["target"] for r in rows)
    assert res["baselines"]["bag_of_words"]["accuracy"] == pytest.approx(bow_right / len(rows)) == 1.0
    # The accuracy's interval and the paired test against bag of words, from those same rows.
    sig = res["significance"]
    lo, hi = sig["accuracy_ci95"]
    assert lo <= res["finetuned"]["accuracy"] <= hi
    ours = [r["prediction"].strip() == r["target"] for r in rows]
    theirs = [r["bag_of_words"] == r["target"] for r in rows]
    vs = sig["against"]["bag_of_words"]
    assert vs["model_only_right"] == sum(a and not b for a, b in zip(ours, theirs))
    assert vs["baseline_only_right"] == sum(b and not a for a, b in zip(ours, theirs))
    assert 0.0 < vs["p_value"] <= 1.0 and set(sig["against"]) == {"bag_of_words"}


@pytest.mark.parametrize("init", ["t5-debug", "pooled-tiny"])
def test_other_families_finetune(init, colours, tmp_path, one_thread):
    result = finetune(
        _cfg(colours, init=init, steps=4, eval_every=4, batch_size=4, max_new_tokens=6), tmp_path / "r", progress=False
    )
    assert result.results["finetuned"]["loss"] < result.results["initial"]["loss"]
    assert 0.0 <= result.results["finetuned"]["accuracy_logprob"] <= 1.0


def test_early_stopping_on_a_metric_that_does_not_improve(colours, tmp_path, one_thread):
    # lr so small the generated strings never become a label: accuracy stays 0, never strictly better.
    cfg = _cfg(colours, steps=40, eval_every=2, patience=2, score_initial=False, max_new_tokens=4)
    cfg.optim.lr = 1e-7
    result = finetune(cfg, tmp_path / "run", progress=False)
    assert result.stopped_early
    assert result.results["steps_run"] == 6  # best at 2, no better at 4 and 6
    assert result.best_step == 2
    assert result.best_checkpoint.name == "step-00000002"


def test_resume_continues_from_the_newest_checkpoint(colours, tmp_path, one_thread):
    import shutil

    from stlm.checkpoint import list_checkpoints

    cfg = _cfg(colours, steps=6, eval_every=3, score_initial=False, max_new_tokens=4, keep_checkpoints=2)
    straight = finetune(cfg, tmp_path / "a", progress=False)
    # The same run, cut back to its first evaluation (step 3), then resumed.
    finetune(cfg, tmp_path / "b", progress=False)
    shutil.rmtree(list_checkpoints(tmp_path / "b")[-1])
    (tmp_path / "b" / "results.json").unlink()
    assert list_checkpoints(tmp_path / "b")[-1].name == "step-00000003"
    resumed = finetune(
        FinetuneConfig(), tmp_path / "b", resume=True, overrides={"task.train_file": str(colours)}, progress=False
    )
    assert resumed.step == 6
    assert resumed.results["finetuned"]["loss"] == pytest.approx(straight.results["finetuned"]["loss"], rel=1e-6)
    assert resumed.results["best_val"] == straight.results["best_val"]


def test_batches_cover_each_epoch_once():
    seen = [i for step in range(5) for i in batch_indices(step, 4, 10, seed=1)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert batch_indices(3, 4, 10, seed=1) == batch_indices(3, 4, 10, seed=1)


def test_cli_finetune_and_its_errors(colours, tmp_path, capsys, one_thread):
    out = tmp_path / "cli"
    code = main(
        [
            "finetune",
            "--train",
            str(colours),
            "--kind",
            "classification",
            "--input-field",
            "text",
            "--target-field",
            "label",
            "--steps",
            "3",
            "--eval-every",
            "3",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--set",
            "train.score_initial=false",
            "--set",
            "train.max_new_tokens=4",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "fine-tuned (best)" in text and "baseline: majority" in text
    assert main(["finetune", "--train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                "--train",
                str(colours),
                "--metric",
                "rougeL",
                "--kind",
                "classification",
                "--input-field",
                "text",
                "--target-field",
                "label",
                "--out",
                str(tmp_path / "y"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "train.metric 'rougeL'" in capsys.readouterr().err


def test_resume_extends_steps_and_refuses_other_changes(colours, tmp_path, one_thread):
    cfg = _cfg(colours, steps=2, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3)
    first = finetune(cfg, tmp_path / "run", progress=False)
    assert first.step == 2
    for key, value in [("optim.lr", 0.5), ("task.separator", " -> "), ("train.batch_size", 2)]:
        with pytest.raises(UserError, match=rf"^{key.replace('.', '[.]')} cannot change when resuming"):
            finetune(FinetuneConfig(), tmp_path / "run", resume=True, overrides={key: value}, progress=False)
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000002"
    longer = finetune(
        FinetuneConfig(),
        tmp_path / "run",
        resume=True,
        overrides={"train.steps": "4", "task.train_file": str(colours)},
        progress=False,
    )
    assert longer.step == 4 and longer.results["steps_run"] == 4
    saved = ckpt_io.load_config(ckpt_io.latest_checkpoint(tmp_path / "run"))["finetune"]
    assert saved["train"]["steps"] == 4 and saved["optim"]["warmup_steps"] == 2  # the run's own warmup, kept
    assert "train.steps" in RESUME_SAFE_KEYS and "optim.lr" not in RESUME_SAFE_KEYS


@pytest.mark.parametrize("init", ["decoder-tiny", "pooled-tiny"])
def test_dropout_is_set_on_the_starting_weights_and_recorded(init, colours, tmp_path, one_thread):
    from stlm.finetune.loop import _starting_model

    cfg = _cfg(colours, init=init, steps=2, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3)
    first = finetune(cfg, tmp_path / "plain", progress=False)
    assert "dropout" not in load(first.best_checkpoint).record.to_dict()["model_config"]
    start = dataclasses.replace(cfg, init=str(tmp_path / "plain" / "best"), dropout=0.25)
    _, model_cfg, model, _, source = _starting_model(start, None)
    assert model_cfg.dropout == 0.25 and model.training and source == first.best_checkpoint
    blocks = [m for m in model.modules() if hasattr(m, "mlp_norm")]
    assert blocks and {m.dropout for m in blocks} == {0.25}
    before = load(first.best_checkpoint).model.state_dict()
    assert (
        all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        and before.keys() == model.state_dict().keys()
    )
    tuned = finetune(start, tmp_path / "tuned", progress=False)
    assert load(tuned.best_checkpoint).record.to_dict()["model_config"]["dropout"] == 0.25
    # Left unset, a run keeps the dropout its starting checkpoint has.
    kept = _starting_model(dataclasses.replace(cfg, init=str(tmp_path / "tuned" / "best")), None)[1]
    assert kept.dropout == 0.25
    with pytest.raises(UserError, match=r"^dropout cannot change when resuming"):
        finetune(FinetuneConfig(), tmp_path / "tuned", resume=True, overrides={"dropout": 0.0}, progress=False)
    with pytest.raises(UserError, match=r"dropout must be a number in \[0, 1\)"):
        FinetuneConfig(dropout=1.0)


def test_api_fine_tune_and_extending_it_on_resume(colours, tmp_path, one_thread):
    import stlm

    settings = {
        "runtime": {"device": "cpu"},
        "optim": {"warmup_steps": 1},
        "train": {"steps": 3, "eval_every": 3, "batch_size": 4, "score_initial": False, "max_new_tokens": 4},
    }
    task = {"train_file": str(colours), "kind": "classification", "input_field": "text", "target_field": "label"}
    # The defaults name a built-in task; giving a training file clears it, as --train does.
    run = stlm.fine_tune(out=tmp_path / "run", progress=False, task=task, **settings)
    assert run.step == 3 and run.best_step == 3 and run.checkpoint.parent.parent.name == "best"
    assert run.results["kind"] == "classification" and "accuracy" in run.val
    with pytest.raises(stlm.UserError, match="optim.lr cannot change"):
        stlm.fine_tune(resume=run.dir, optim={"lr": 1.0})
    longer = stlm.fine_tune(
        resume=run.dir, train={"steps": 5, "eval_every": 5}, task={"train_file": str(colours)}, progress=False
    )
    assert longer.step == 5 and longer.results["steps_run"] == 5


def test_resume_on_own_files_reads_only_the_files_named_again(colours, tmp_path, capsys, one_thread):
    """A checkpoint names no path stlm reads: --train is given again (wherever the file is now), same examples."""
    import shutil

    cfg = _cfg(colours, steps=2, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3)
    finetune(cfg, tmp_path / "run", progress=False)

    def refused(*argv):
        assert main(["finetune", "--resume", str(tmp_path / "run"), "--steps", "3", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    assert f"resume with --train {colours}" in refused()
    other = tmp_path / "other.jsonl"
    other.write_text(colours.read_text().replace("red", "blue"))
    assert "other examples" in refused("--train", str(other))
    assert "--val was not part of" in refused("--train", str(colours), "--val", str(colours))
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000002"  # nothing ran
    moved = shutil.copy(colours, tmp_path / "moved.jsonl")
    assert main(["finetune", "--resume", str(tmp_path / "run"), "--steps", "3", "--train", str(moved), "--quiet"]) == 0
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000003"


def _split_colours(colours: Path, root: Path) -> dict[str, Path]:
    """The colours as train (24), val (8) and test (8) files, and train + val as one file."""
    lines = colours.read_text(encoding="utf-8").splitlines(keepends=True)
    parts = {"train": lines[:24], "val": lines[24:32], "test": lines[32:], "train+val": lines[:32]}
    for name, part in parts.items():
        (root / f"{name}.jsonl").write_text("".join(part), encoding="utf-8")
    return {name: root / f"{name}.jsonl" for name in parts}


def _files_cfg(files: dict[str, Path], train: str, **settings) -> FinetuneConfig:
    cfg = _cfg(files[train], **{"steps": 6, "eval_every": 3, "score_initial": False, "max_new_tokens": 4, **settings})
    cfg.task.val_file, cfg.task.test_file = str(files["val"]), str(files["test"])
    return cfg


def test_refit_trains_on_train_and_val_and_keeps_the_last_step(colours, tmp_path, capsys, one_thread):
    from stlm.finetune.bow import NaiveBayes, fit_bag_of_words
    from stlm.finetune.examples import load_examples

    files = _split_colours(colours, tmp_path)
    refit = finetune(_files_cfg(files, "train", refit=True), tmp_path / "refit", progress=False)
    # The same steps as a plain run on one file holding train and then val, validated only at its
    # last step (so that is its best): the same batches, so the same weights, bit for bit.
    plain = finetune(_files_cfg(files, "train+val", eval_every=6), tmp_path / "plain", progress=False)
    res = refit.results
    assert res["refit"] is True and plain.results["refit"] is False
    assert (
        res["provenance"]["checkpoint"]["weights_sha256"] == plain.results["provenance"]["checkpoint"]["weights_sha256"]
    )
    assert res["finetuned"] == plain.results["finetuned"] and res["scored_on"] == "test"
    assert refit.best_step == refit.step == 6 and res["best_val"] is None and not res["stopped_early"]
    records = [json.loads(line) for line in (tmp_path / "refit" / "metrics.jsonl").read_text().splitlines()]
    assert records and not any("val_loss" in r for r in records)  # nothing is validated on examples it trains on
    assert [c.name for c in ckpt_io.list_checkpoints(tmp_path / "refit")] == ["step-00000006"]
    # Bag of words is refit the same way: its smoothing chosen on val, then fitted on train + val.
    read = dict(input_field="text", target_field="label")
    train, val, test = (load_examples(files[k], **read) for k in ("train", "val", "test"))
    alpha = fit_bag_of_words(train, val).alpha
    bow = NaiveBayes.fit(train + val, alpha=alpha)
    rows = res["predictions"]
    assert [r["bag_of_words"] for r in rows] == [bow.predict(ex.input) for ex in test]
    assert res["baselines"]["bag_of_words"]["model"].endswith(
        f"alpha {alpha} (chosen on validation), refit on train + validation"
    )
    assert plain.results["baselines"]["bag_of_words"]["model"].endswith(" (chosen on validation)")
    print_finetune(res)
    assert "fine-tuned (last step, refit on train + val)" in capsys.readouterr().out
    # Resumed from its step-3 checkpoint, a refit run ends where the uninterrupted one did.
    cut = _files_cfg(files, "train", refit=True, keep_checkpoints=2)
    finetune(cut, tmp_path / "cut", progress=False)
    import shutil

    shutil.rmtree(ckpt_io.list_checkpoints(tmp_path / "cut")[-1])
    (tmp_path / "cut" / "results.json").unlink()
    resumed = finetune(
        FinetuneConfig(),
        tmp_path / "cut",
        resume=True,
        overrides={f"task.{k}_file": str(files[k]) for k in ("train", "val", "test")},
        progress=False,
    )
    assert (
        resumed.results["provenance"]["checkpoint"]["weights_sha256"]
        == res["provenance"]["checkpoint"]["weights_sha256"]
    )


def test_refit_needs_a_test_file_and_says_so(colours, tmp_path, capsys, one_thread):
    argv = ["finetune", "--train", str(colours), "--kind", "classification", "--input-field", "text"]
    argv += ["--target-field", "label", "--steps", "2", "--refit", "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--refit trains on the validation examples too" in err and "give --test" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x" / "results.json").exists()
