"""Data files: loading, deterministic splits, and bad input named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig, TaskConfig
from stlm.finetune.examples import Example, check_labels, load_examples, split_examples
from stlm.finetune.loop import load_task_data


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(path: Path, **fields) -> list[Example]:
    return load_examples(
        path,
        input_field=fields.get("input", "input"),
        target_field=fields.get("target", "target"),
        context_field=fields.get("context"),
    )


def test_jsonl_and_csv_load_the_same_examples(tmp_path):
    rows = [{"input": "a, b", "target": "x"}, {"input": "c\nd", "target": "y"}]
    jsonl = _jsonl(tmp_path / "d.jsonl", rows + [""])  # a trailing blank line is not an example
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('input,target\n"a, b",x\n"c\nd",y\n', encoding="utf-8")
    assert [(e.input, e.target) for e in _load(jsonl)] == [(e.input, e.target) for e in _load(csv_path)]
    assert _load(csv_path)[1].where == f"{csv_path}:4"  # the row's last line


def test_qa_input_joins_question_and_context(tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", [{"question": "Who?", "context": "Ada wrote it.", "answer": "Ada"}])
    (ex,) = _load(path, input="question", target="answer", context="context")
    assert ex.input == "question: Who?\ncontext: Ada wrote it." and ex.target == "Ada"


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"input": "a", "target": "x"}, {"input": "b"}], ":2: missing field(s) 'target'"),
        ([{"input": "a", "target": "x"}, "{not json"], ":2: not valid JSON"),
        (['["a", "x"]'], ":1: expected a JSON object"),
        ([{"input": "a", "target": "x"}, {"input": "a", "target": 3}], ":2: field 'target' must be a string"),
        ([{"input": "a", "target": "x"}, {}, {"input": "b", "target": "  "}], ":2: missing field(s) 'input', 'target'"),
        ([{"input": "a", "target": "x"}, {"input": "b", "target": "  "}], ":2: the target ('target') is empty"),
        ([], "is empty"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, rows, message):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as err:
        _load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_csv_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,target\nhello,x\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.csv:1: missing column 'input'"):
        _load(path)
    path.write_text("input,target\nhello,x\nshort\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.csv:3: row has no value for column 'target'"):
        _load(path)
    (tmp_path / "x.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="must be .jsonl"):
        _load(tmp_path / "x.txt")


def test_label_outside_the_label_set_names_file_and_line(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"input": f"i{i}", "target": ["red", "blue"][i % 2]} for i in range(6)])
    val = _jsonl(tmp_path / "val.jsonl", [{"input": "v", "target": "red"}, {"input": "w", "target": "green"}])
    cfg = FinetuneConfig(task=TaskConfig(train_file=str(train), val_file=str(val), kind="classification"))
    with pytest.raises(UserError) as err:
        load_task_data(cfg, tmp_path / "out")
    assert f"{val}:2: validation label 'green' is not in the label set (blue, red)" in str(err.value)
    # A given label set is checked against the training file too.
    cfg = FinetuneConfig(
        task=TaskConfig(train_file=str(train), val_file=str(val), kind="classification", labels="red,green")
    )
    with pytest.raises(UserError, match=r"train\.jsonl:2: training label 'blue'"):
        load_task_data(cfg, tmp_path / "out")
    with pytest.raises(UserError, match="label 'x' is not in"):
        check_labels([Example("i", "x")], ["y"], what="test")


def test_split_is_deterministic_and_order_free():
    examples = [Example(f"input {i}", f"t{i}") for i in range(200)]
    train, val = split_examples(examples, 0.1, seed=0)
    train2, val2 = split_examples(examples[::-1], 0.1, seed=0)
    assert sorted(e.input for e in val) == sorted(e.input for e in val2)
    assert len(train) + len(val) == 200 and 5 < len(val) < 40
    assert {e.input for e in val} != {e.input for e in split_examples(examples, 0.1, seed=1)[1]}
    with pytest.raises(UserError, match="empty validation set"):
        split_examples(examples[:1], 0.1, seed=0)


def test_config_needs_a_task_or_a_file():
    with pytest.raises(UserError, match="either a built-in task"):
        TaskConfig()
    with pytest.raises(UserError, match="either a built-in task"):
        TaskConfig(name="docstring-topic", train_file="x.jsonl")
    assert TaskConfig(name="docstring-topic").resolved_kind() == "classification"
    assert FinetuneConfig(task=TaskConfig(name="docstring-summary")).metric() == "rougeL"
    cfg = FinetuneConfig().with_overrides({"task.name": "docstring-summary", "train.patience": "5"})
    assert cfg.metric() == "rougeL" and cfg.train.patience == 5
