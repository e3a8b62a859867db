"""Channel classification: the model reads the label and learns the input; the likeliest input picks the label."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from stlm import registry
from stlm.cli.main import main
from stlm.config import DistillConfig, OptimConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.evaluate import classify_by_channel, label_log_prior
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText, as_channel
from stlm.finetune.loop import finetune
from stlm.tokenizers import ByteTokenizer
from tests.conftest import seeded_model

LABELS = ["red", "blue", "green"]
EXAMPLES = [
    Example("the sky is clear", "blue"),
    Example("an apple, a cherry and a long long tail", "red"),
    Example("grass", "green"),
    Example("héllo wörld, ünïcode", "blue"),
]


def _fmt(family, tokenizer) -> TextToText:
    # The channel view: labels are read (up to 16 bytes), inputs are learned (up to 64 bytes).
    return TextToText(family, tokenizer, "\n=> ", 16, 64, 128 if not family.encoder_decoder else None)


def _reference_logprobs(model, fmt: TextToText, examples, labels) -> list[list[float]]:
    """log p(input + EOS | label) of each (example, label), from the training batch's own per-row log-probs."""
    rows = []
    for ex in examples:
        pairs = as_channel([Example(ex.input, label) for label in labels])
        with torch.no_grad():
            logprob, _ = fmt.family.pair_logprobs(model, *fmt.batch(pairs))
        rows.append([float(v) for v in logprob])
    return rows


@pytest.mark.parametrize("name", ["decoder-tiny", "pooled-tiny", "t5-debug"])
def test_channel_choice_is_the_argmax_of_input_likelihood_plus_prior(name, one_thread):
    _, model = seeded_model(name)
    family, config = registry.resolve_model(name)
    fmt = _fmt(family, family.resolve_tokenizer("auto", config))
    reference = _reference_logprobs(model, fmt, EXAMPLES, LABELS)
    kwargs = dict(batch_size=3, device="cpu", autocast=torch.autocast("cpu", enabled=False))
    for prior in ([0.0, 0.0, 0.0], [math.log(0.2), math.log(0.5), math.log(0.3)]):
        chosen = classify_by_channel(model, fmt, EXAMPLES, LABELS, prior, **kwargs)
        expected = [LABELS[max(range(3), key=lambda j: row[j] + prior[j])] for row in reference]
        assert chosen == expected
    # A prior that outweighs any likelihood decides alone, whichever label it favours.
    for j, label in enumerate(LABELS):
        prior = [0.0 if k == j else -1e6 for k in range(3)]
        assert classify_by_channel(model, fmt, EXAMPLES, LABELS, prior, **kwargs) == [label] * len(EXAMPLES)
    with pytest.raises(ValueError, match="3 labels"):
        classify_by_channel(model, fmt, EXAMPLES, LABELS, [0.0], **kwargs)


def test_channel_pairs_learn_the_input_and_read_the_label():
    family, _ = registry.resolve_model("decoder-tiny")
    fmt = _fmt(family, ByteTokenizer())
    turned = as_channel(EXAMPLES)
    assert [(t.input, t.target) for t in turned] == [(ex.target, ex.input) for ex in EXAMPLES]
    assert as_channel([Example("sky", " blue\n")]) == [Example("blue", "sky")]  # the label as the label set has it
    tensors = fmt.batch(turned)
    # The loss counts every byte of each input (cut to 64) and its EOS, and nothing of the label.
    assert fmt.n_target_tokens(tensors) == sum(min(64, len(ex.input.encode())) + 1 for ex in EXAMPLES)


def test_label_prior_is_the_smoothed_training_share():
    train = [Example("a", "red")] * 3 + [Example("b", "blue")]
    prior = label_log_prior(train, LABELS)
    assert [math.exp(p) for p in prior] == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def _cfg(train_file: Path, init: str, **train) -> FinetuneConfig:
    settings = dict(steps=40, batch_size=8, eval_every=20, eval_examples=0, log_every=10)
    settings.update(train)
    return FinetuneConfig(
        init=init,
        task=TaskConfig(
            train_file=str(train_file),
            kind="classification",
            input_field="text",
            target_field="label",
            direction="channel",
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0),
        train=FinetuneTrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


def test_channel_finetune_learns_the_task(colours, tmp_path, one_thread):
    result = finetune(_cfg(colours, "decoder-tiny"), tmp_path / "run", progress=False)
    res = result.results
    assert res["finetuned"]["loss"] < res["initial"]["loss"]  # nats per input byte, under its label
    assert res["finetuned"]["accuracy"] == res["finetuned"]["accuracy_logprob"] == 1.0
    rows = res["predictions"]
    assert all(r["prediction"] == r["prediction_logprob"] == r["target"] for r in rows)
    # The kept scores are what the answer maximised: log p(input | label) + log p(label).
    assert all(max(r["label_scores"], key=r["label_scores"].get) == r["prediction_logprob"] for r in rows)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["finetune"]["task"]["direction"] == res["direction"] == "channel"


@pytest.mark.parametrize("init", ["t5-debug", "pooled-tiny"])
def test_channel_finetune_runs_for_every_family(init, colours, tmp_path, one_thread):
    res = finetune(_cfg(colours, init, steps=4, eval_every=4, batch_size=4), tmp_path / "r", progress=False).results
    assert res["finetuned"]["loss"] < res["initial"]["loss"]
    assert {r["prediction"] for r in res["predictions"]} <= {"red", "blue"}


def test_channel_is_refused_where_it_does_not_apply(colours, tmp_path):
    with pytest.raises(UserError, match="for classification tasks"):
        TaskConfig(train_file="x.jsonl", kind="summarization", direction="channel")
    with pytest.raises(UserError, match="task.direction must be one of direct, channel"):
        TaskConfig(name="docstring-topic", direction="sideways")
    cfg = _cfg(colours, "decoder-tiny")
    with pytest.raises(UserError, match="drop --teacher or --direction channel"):
        FinetuneConfig(task=cfg.task, distill=DistillConfig(teacher="runs/t"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "sky", "label": "blue"}\n{"text": " ", "label": "red"}\n', encoding="utf-8")
    cfg.task.val_file = str(colours)
    cfg.task.train_file = str(empty)
    with pytest.raises(UserError, match=r"empty.jsonl:2: empty input"):
        finetune(cfg, tmp_path / "e", progress=False)
    assert not (tmp_path / "e" / "config.json").exists()


def test_cli_direction_flag(colours, tmp_path, capsys, one_thread):
    common = ["finetune", "--train", str(colours), "--kind", "classification", "--input-field", "text"]
    common += ["--target-field", "label", "--threads", "1", "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        main([*common, "--direction", "sideways", "--out", str(tmp_path / "a")])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert (
        main(["finetune", "--task", "docstring-summary", "--direction", "channel", "--out", str(tmp_path / "b")]) == 2
    )
    assert "for classification tasks" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    args = [*common, "--direction", "channel", "--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    assert "(classification, channel direction), scored on val" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "config.json").read_text())["finetune"]["task"]["direction"] == "channel"
    # SPIN trains a model to write answers; a channel task has none to write.
    spin_out = tmp_path / "spin"
    assert (
        main(
            ["spin", str(tmp_path / "c"), "--task", "docstring-topic", "--direction", "channel", "--out", str(spin_out)]
        )
        == 2
    )
    assert "a channel classifier writes none: run it with --direction direct" in capsys.readouterr().err
    assert not spin_out.exists()


def test_channel_resume_equals_uninterrupted_and_keeps_its_direction(colours, tmp_path, one_thread):
    import shutil

    from stlm.checkpoint import list_checkpoints

    cfg = _cfg(colours, "decoder-tiny", steps=6, eval_every=3, score_initial=False, keep_checkpoints=2)
    straight = finetune(cfg, tmp_path / "a", progress=False)
    finetune(cfg, tmp_path / "b", progress=False)
    shutil.rmtree(list_checkpoints(tmp_path / "b")[-1])  # cut back to step 3
    (tmp_path / "b" / "results.json").unlink()
    again = {"task.train_file": str(colours)}
    with pytest.raises(UserError, match="task.direction"):
        finetune(FinetuneConfig(), tmp_path / "b", resume=True, overrides={**again, "task.direction": "direct"})
    resumed = finetune(FinetuneConfig(), tmp_path / "b", resume=True, overrides=again, progress=False)
    assert resumed.results["direction"] == "channel" and resumed.step == 6
    assert resumed.results["finetuned"] == pytest.approx(straight.results["finetuned"], rel=1e-6)
    assert [r["prediction"] for r in resumed.results["predictions"]] == [
        r["prediction"] for r in straight.results["predictions"]
    ]
