"""Soft labels: reading them, the targets along the label's tokens, the loss, and a run that trains on them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from stlm import registry
from stlm.cli.main import main
from stlm.config import OptimConfig, RuntimeConfig
from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.examples import Example, load_examples
from stlm.finetune.format import TextToText
from stlm.finetune.loop import finetune, load_task_data
from stlm.finetune.soft import SoftLabels
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer
from tests.conftest import seeded_model

PROBS = (("data types", 0.5), ("debugging", 0.3), ("gui", 0.2))


def _soft(name: str = "decoder-tiny") -> tuple[torch.nn.Module, SoftLabels]:
    family, model = seeded_model(name)
    tok = ByT5Tokenizer() if family == "t5" else ByteTokenizer()
    max_len = None if family == "t5" else model.config.max_seq_len
    return model, SoftLabels(TextToText(registry.get_family(family), tok, "\n=> ", 64, 16, max_len))


def test_targets_along_the_label_are_the_posterior_of_each_next_byte():
    _, soft = _soft()
    points = soft.points(Example("x", "data types", probs=PROBS))
    # Byte 0: 'd' carries both labels that start with it; byte 1, given "d": data types against debugging.
    assert points == [
        (0, ord("d"), pytest.approx(0.8)),
        (0, ord("g"), pytest.approx(0.2)),
        (1, ord("a"), pytest.approx(0.625)),
        (1, ord("e"), pytest.approx(0.375)),
    ]
    # Along "gui" the labels part ways only at its first byte.
    assert soft.points(Example("x", "gui", probs=PROBS)) == [(0, ord("d"), 0.8), (0, ord("g"), 0.2)]
    # A label of probability 1 leaves nothing soft; neither does a hard-labelled row.
    assert soft.points(Example("x", "gui", probs=(("gui", 1.0), ("debugging", 0.0)))) == []
    assert soft.points(Example("x", "gui")) == []


@pytest.mark.parametrize("name", ["decoder-tiny", "pooled-tiny", "t5-debug"])
def test_a_certain_soft_label_trains_as_the_hard_label(name, one_thread):
    model, soft = _soft(name)
    hard = [Example("the sky is clear", "blue"), Example("fire and a cherry", "red")]
    certain = [Example(ex.input, ex.target, probs=((ex.target, 1.0), ("other", 0.0))) for ex in hard]
    expected = soft.fmt.loss(model, *soft.fmt.batch(hard))
    assert torch.allclose(soft.loss(model, *soft.batch(certain)), expected, atol=1e-6)


def test_soft_loss_is_the_cross_entropy_against_the_posterior(one_thread):
    model, soft = _soft()
    examples = [Example("a docstring", "data types", probs=PROBS), Example("another", "gui")]
    got = soft.loss(model, *soft.batch(examples))

    def logp(prompt: str, target: str) -> torch.Tensor:  # (len(target) + 1, V): each target byte's distribution
        tok = soft.fmt.tokenizer
        ids = tok.encode(prompt + "\n=> ", bos=True) + tok.encode(target, eos=True)
        out = F.log_softmax(model(torch.tensor([ids[:-1]])).float(), -1)[0]
        return out[len(ids) - len(tok.encode(target, eos=True)) - 1 :]

    lp = logp("a docstring", "data types")
    terms = [-(0.8 * lp[0, ord("d")] + 0.2 * lp[0, ord("g")]), -(0.625 * lp[1, ord("a")] + 0.375 * lp[1, ord("e")])]
    terms += [-lp[k, b] for k, b in enumerate([*b"data types", ByteTokenizer().eos_id]) if k >= 2]
    lp = logp("another", "gui")
    terms += [-lp[k, b] for k, b in enumerate([*b"gui", ByteTokenizer().eos_id])]
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-5)


def test_training_on_a_soft_label_learns_its_probabilities(one_thread):
    # Hard targets would drive p(first byte) to 1; a soft label 0.7 / 0.3 is matched instead.
    torch.manual_seed(0)
    model, soft = _soft()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = soft.batch([Example("which?", "yes", probs=(("yes", 0.7), ("no", 0.3)))])
    for _ in range(150):
        opt.zero_grad()
        soft.loss(model, *batch).backward()
        opt.step()
    model.eval()
    ids = soft.fmt.tokenizer.encode("which?\n=> ", bos=True)
    p = torch.softmax(model(torch.tensor([ids]))[0, -1].float(), -1)
    assert p[ord("y")].item() == pytest.approx(0.7, abs=0.05) and p[ord("n")].item() == pytest.approx(0.3, abs=0.05)


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_reading_soft_labels(tmp_path):
    path = _write(
        tmp_path / "t.jsonl",
        [
            {"text": "a", "label": "red"},
            {"text": "b", "probs": {"red": 1, "blue": 3}},  # no target: the likeliest label
            {"text": "c", "label": "red", "probs": {"red": 0.2, "blue": 0.8}},  # the path stays "red"
        ],
    )
    rows = load_examples(path, input_field="text", target_field="label", probs_field="probs")
    assert [(ex.target, ex.probs) for ex in rows] == [
        ("red", ()),
        ("blue", (("red", 0.25), ("blue", 0.75))),
        ("red", (("red", 0.2), ("blue", 0.8))),
    ]
    assert json.loads(rows[1].to_json()) == {"input": "b", "target": "blue", "probs": {"red": 0.25, "blue": 0.75}}


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": "a"}, "t.jsonl:1: missing field 'label' (a data line needs a target, or a soft label in 'probs')"),
        ({"text": "a", "probs": ["red"]}, "t.jsonl:1: 'probs' must be an object of label: probability"),
        ({"text": "a", "probs": {"red": -0.1}}, "each label needs a probability >= 0"),
        ({"text": "a", "probs": {"red": True}}, "each label needs a probability >= 0"),
        ({"text": "a", "probs": {"red": 0, "blue": 0}}, "sum to 0"),
        ({"text": "a", "probs": {"red": 1, " red": 1}}, "names the label 'red' twice"),
    ],
)
def test_bad_soft_labels_are_refused_with_their_line(tmp_path, row, message):
    path = _write(tmp_path / "t.jsonl", [row])
    with pytest.raises(UserError, match=None) as err:
        load_examples(path, input_field="text", target_field="label", probs_field="probs")
    assert message in str(err.value)


def _colour_rows(n: int, soft: bool) -> list[dict]:
    rows = []
    for i in range(n):
        red = i % 2 == 0
        row: dict = {"text": ("apple cherry fire" if red else "sky sea ice") + f" {i}"}
        if soft:
            row["probs"] = {"red": 0.9, "blue": 0.1} if red else {"red": 0.2, "blue": 0.8}
        else:
            row["label"] = "red" if red else "blue"
        rows.append(row)
    return rows


def _cfg(train: str, val: str | None = None, **task) -> FinetuneConfig:
    return FinetuneConfig(
        init="decoder-tiny",
        task=TaskConfig(
            train_file=train, val_file=val, kind="classification", input_field="text", target_field="label", **task
        ),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0),
        train=FinetuneTrainConfig(steps=4, batch_size=8, eval_every=4, eval_examples=0, score_initial=False),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


def test_a_run_trains_on_hard_and_soft_rows(tmp_path, one_thread):
    train = _write(tmp_path / "train.jsonl", _colour_rows(16, soft=False) + _colour_rows(16, soft=True))
    # Validation is held out from the hard rows only (it is judged against targets); soft rows all train.
    data = load_task_data(_cfg(train), tmp_path / "data")
    assert sum(bool(ex.probs) for ex in data.train) == 16 and data.val and not any(ex.probs for ex in data.val)
    assert data.labels == ["blue", "red"]
    result = finetune(_cfg(train), tmp_path / "run", progress=False)
    assert result.results["steps_run"] == 4 and result.results["finetuned"]["loss"] < math.log(264)


def test_soft_labels_are_refused_where_they_do_not_apply(tmp_path, capsys, one_thread):
    train = _write(tmp_path / "train.jsonl", _colour_rows(8, soft=False) + _colour_rows(8, soft=True))
    with pytest.raises(UserError, match="soft labels train the direct direction"):
        finetune(_cfg(train, direction="channel"), tmp_path / "a", progress=False)
    green = _write(
        tmp_path / "green.jsonl", _colour_rows(8, soft=False) + [{"text": "grass", "probs": {"red": 0.9, "green": 0.1}}]
    )
    with pytest.raises(UserError, match="green.jsonl:9: soft label 'green' is not in the label set"):
        finetune(_cfg(green, labels="red,blue"), tmp_path / "b", progress=False)
    code = main(
        ["finetune", "--train", train, "--kind", "summarization", "--input-field", "text"]
        + ["--target-field", "label", "--out", str(tmp_path / "c"), "--quiet"]
    )
    assert code == 2 and "is for classification tasks" in capsys.readouterr().err
