"""Result files are named by task, data, split and settings: distinct evaluations never share a name."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from stlm.evaluation.base import EvalOptions
from stlm.evaluation.tasks import result_name

CKPT = "step-00001200"
TRAINED_ON = {"run": {"data": {"source": "pydocs"}}}


def name(task: str, **options) -> str:
    return result_name(task, EvalOptions(**options), CKPT, TRAINED_ON)


def test_distinct_evaluations_get_distinct_names():
    evaluations = {
        "bpb val": name("bpb"),
        "bpb train": name("bpb", split="train"),
        "bpb other corpus": name("bpb", corpus="shakespeare"),
        "bpb file a": name("bpb", file=Path("notes/a.txt")),
        "bpb file b": name("bpb", file=Path("notes/b.txt")),
        "bpb first ids": name("bpb", max_ids=100_000),
        "bpb context": name("bpb", context=128),
        "bpb stride": name("bpb", context=128, stride=32),
        "wikitext2 val": name("wikitext2", split="val"),
        "wikitext2 test": name("wikitext2", split="test"),
        "blimp": name("blimp"),
        "blimp limit": name("blimp", limit=100),
        "piqa": name("piqa"),
        "mc x": name("mc:data/x.jsonl"),
        "mc y": name("mc:data/y.jsonl"),
    }
    assert len(set(evaluations.values())) == len(evaluations), evaluations
    assert evaluations["bpb val"] == f"bpb-pydocs-val-{CKPT}" and evaluations["bpb train"] == f"bpb-pydocs-train-{CKPT}"
    assert (
        evaluations["bpb file a"] == f"bpb-a.txt-{CKPT}" and evaluations["wikitext2 test"] == f"wikitext2-test-{CKPT}"
    )
    assert evaluations["mc x"] == f"mc-x-{CKPT}"  # as before: the file stem names a multiple-choice set
    # Another checkpoint of the same evaluation is another file too.
    assert result_name("bpb", EvalOptions(), "step-00000600", TRAINED_ON) != evaluations["bpb val"]


def test_the_same_evaluation_gets_the_same_name():
    assert name("bpb", split="train") == name("bpb", split="train")
    # The default corpus is the one the checkpoint was trained on: naming it changes nothing.
    assert name("bpb") == name("bpb", corpus="pydocs")
    # Settings a task does not read leave its name alone (BLiMP has no split or window).
    assert name("blimp") == name("blimp", split="test", context=64, file=Path("x.txt"))
    assert name("bpb", file=Path("a.txt"), split="train") == name("bpb", file=Path("a.txt"))


def test_names_are_file_name_safe():
    names = [
        name("bpb", corpus="hf:roneneldan/TinyStories:default"),
        name("bpb", file=Path("my notes (v2)/ünïcode café.txt")),
        name("mc:some dir/items & more.jsonl"),
        name("bpb", corpus="/data/corpus dir/"),
    ]
    for n, other in itertools.combinations(names, 2):
        assert n != other
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", n), n
        assert not n.startswith((".", "-")) and n.endswith(CKPT)
