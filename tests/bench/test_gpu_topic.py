"""bench/gpu_topic.py: what it carries unpacks to what stlm reads, and the commands it runs are stlm's."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from bench import gpu_topic
from stlm.cli.main import build_parser
from stlm.data.offline_mix import corpus_path
from stlm.finetune.examples import Example


def test_the_carried_corpus_and_split_unpack_to_what_stlm_reads(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    corpus = corpus_path(cache)
    corpus.parent.mkdir(parents=True)
    corpus.write_text('{"text": "one \\u00e9", "source": "a"}\n{"text": "two", "source": "b"}\n', encoding="utf-8")
    split = {
        s: [Example(f"{s} docstring {i}", "gui" if i % 2 else "files") for i in range(3)] for s in gpu_topic.SPLITS
    }
    monkeypatch.setattr(
        "stlm.finetune.pydocs_tasks.build_task", lambda name: split if name == "docstring-topic" else {}
    )
    rest = ["an unlabelled docstring", "another, caf\u00e9"]
    monkeypatch.setattr(
        "stlm.finetune.pydocs_tasks.unlabelled_docstrings", lambda name: rest if name == "docstring-topic" else []
    )
    monkeypatch.setattr(gpu_topic, "CARRY", tmp_path / ".carry")

    gpu_topic.main(["pack", "--cache-dir", str(cache), "--no-wheels"])
    for s in gpu_topic.SPLITS:
        rows = [json.loads(line) for line in (tmp_path / ".carry" / "topic" / f"{s}.jsonl").read_text().splitlines()]
        assert [(r["input"], r["target"]) for r in rows] == [(e.input, e.target) for e in split[s]]
    unlabelled = (tmp_path / ".carry" / "topic" / gpu_topic.UNLABELLED).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in unlabelled] == [{"input": t} for t in rest]

    # The GPU machine's cache folder is its own; the corpus lands under the name stlm looks for there.
    unpacked = gpu_topic.unpack(tmp_path / "work")
    assert corpus_path(unpacked).read_bytes() == corpus.read_bytes()
    assert gpu_topic.unpack(tmp_path / "work") == unpacked  # a second call keeps what is there


def test_its_commands_parse_as_stlm_commands(tmp_path):
    args = argparse.Namespace(
        model="pooled-50m",
        set=list(gpu_topic.MODEL_SETS),
        seq_len=512,
        batch_size=64,
        pretrain_lr=6e-4,
        device="cuda",
        precision="auto",
        ft_steps=300,
        ft_eval_every=50,
        ft_threads=2,
        bow_weight=0.75,
    )
    pre = build_parser().parse_args(gpu_topic.pretrain_args(args, tmp_path / "cache", 1234, tmp_path / "pre"))
    assert (pre.command, getattr(pre, "train.steps"), getattr(pre, "data.source")) == ("train", 1234, "offline-mix")
    assert pre.set == list(gpu_topic.MODEL_SETS)
    ft = build_parser().parse_args(gpu_topic.finetune_args(args, tmp_path / "pre", 1e-3, 1, tmp_path / "ft"))
    assert (ft.command, ft.init, getattr(ft, "task.kind")) == ("finetune", str(tmp_path / "pre"), "classification")
    assert (getattr(ft, "optim.lr"), getattr(ft, "train.seed"), getattr(ft, "train.eval_examples")) == (1e-3, 1, 0)
    assert getattr(ft, "task.test_file").endswith("test.jsonl") and getattr(ft, "train.score_initial") is False
    # The co-training student: the teacher's labels by stlm classify, then a longer fine-tune on them.
    teach = build_parser().parse_args(gpu_topic.teacher_args(args, tmp_path / "ft", tmp_path / "soft.jsonl"))
    assert (teach.command, teach.model, teach.bag_of_words_weight) == ("classify", [tmp_path / "ft"], 0.75)
    assert teach.input.name == gpu_topic.UNLABELLED and teach.bag_of_words_val.name == "val.jsonl"
    mixed = tmp_path / "train+soft.jsonl"
    st = build_parser().parse_args(
        gpu_topic.finetune_args(args, tmp_path / "pre", 1e-3, 0, tmp_path / "st", mixed, 900, 150)
    )
    assert (getattr(st, "task.train_file"), getattr(st, "train.steps"), getattr(st, "train.eval_every")) == (
        str(mixed),
        900,
        150,
    )


def test_a_pretraining_counts_as_finished_only_with_its_last_checkpoint(tmp_path):
    run = tmp_path / "pre"
    assert gpu_topic.finished_steps(run) is None
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run": {"train": {"steps": 40}}}))
    (run / "checkpoints" / "step-00000020").mkdir(parents=True)
    assert gpu_topic.finished_steps(run) is None
    (run / "checkpoints" / "step-00000040").mkdir()
    assert gpu_topic.finished_steps(run) == 40


def test_the_seed_average_votes_with_normalised_posteriors():
    def row(target, **scores):
        return {"target": target, "label_scores": scores}

    # Run a is sure and wrong on the first example, run b unsure and right; on the second both
    # lean the right way. Run b's scores are all shifted by -5: normalising removes that shift.
    a = [row("gui", gui=math.log(0.3), files=math.log(0.7)), row("files", gui=math.log(0.4), files=math.log(0.6))]
    b = [row("gui", gui=math.log(0.9) - 5, files=math.log(0.1) - 5), row("files", gui=-5.7, files=-5.2)]
    assert gpu_topic.seed_average([a]) == 0.5
    # mean log-posterior of gui on the first: (log .3 + log .9) / 2 > (log .7 + log .1) / 2
    assert gpu_topic.seed_average([a, b]) == 1.0
    with pytest.raises(ValueError, match="different numbers"):
        gpu_topic.seed_average([a, b[:1]])
