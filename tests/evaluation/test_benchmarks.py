"""Benchmark tasks through the real harness: known-preference models, normalisation, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stlm import registry
from stlm.errors import UserError
from stlm.evaluation.blimp import load_blimp
from stlm.evaluation.metrics import wilson_interval
from stlm.evaluation.multiple_choice import continuation, load_multiple_choice, load_piqa
from stlm.evaluation.tasks import EvalModel, EvalOptions, resolve_data_dir, run_task
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer
from tests.evaluation.fakes import OracleLM, UnigramLM

MC_ITEMS = [
    {"context": "To open a jar,", "choices": ["twist the lid.", "paint the lid.", "eat the lid."], "gold": 0},
    {"context": "Water boils at", "choices": ["a hundred degrees.", "minus forty."], "gold": 0},
    {"context": "", "choices": ["Cats purr.", "Cats bark loudly."], "gold": 1},
]
BLIMP_PAIRS = {
    "agreement": [("The dogs bark.", "The dogs barks."), ("A cat sleeps.", "A cat sleep.")],
    "island": [("Who did you see?", "Who you did see?"), ("What fell?", "What fell fell?"), ("It rains.", "It rain.")],
}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def blimp_dir(tmp_path):
    root = tmp_path / "data"
    (root / "blimp").mkdir(parents=True)
    for uid, pairs in BLIMP_PAIRS.items():
        rows = [
            {"sentence_good": g, "sentence_bad": b, "UID": uid, "field": "syntax", "pairID": str(i)}
            for i, (g, b) in enumerate(pairs)
        ]
        _write_jsonl(root / "blimp" / f"{uid}.jsonl", rows)
    return root


def _oracle(texts: list[str]) -> EvalModel:
    tok = ByteTokenizer()
    model = OracleLM([tok.encode(t, bos=True) for t in texts], tok.vocab_size)
    return EvalModel(model, tok, registry.get_family("decoder"), batch_size=3)


def test_blimp_oracle_preferring_good_scores_100_and_bad_scores_0(blimp_dir):
    options = EvalOptions(data_dir=blimp_dir)
    good = run_task("blimp", _oracle([g for pairs in BLIMP_PAIRS.values() for g, _ in pairs]), options)
    assert good.metrics == {"accuracy": 100.0, "pairs": 5, "phenomena": 2}
    assert good.details["per_phenomenon"]["island"]["pairs"] == 3
    bad = run_task("blimp", _oracle([b for pairs in BLIMP_PAIRS.values() for _, b in pairs]), options)
    assert bad.metrics["accuracy"] == 0.0
    # the interval over the 5 pairs: all right reaches 100, none right starts at 0
    assert good.details["accuracy_ci95"] == pytest.approx([100 * wilson_interval(5, 5)[0], 100.0])
    assert bad.details["accuracy_ci95"] == pytest.approx([0.0, 100 * wilson_interval(0, 5)[1]])
    assert "(56.6-100.0, 95% interval)" in good.summary
    limited = run_task("blimp", _oracle([]), EvalOptions(data_dir=blimp_dir, limit=1))
    assert limited.metrics["pairs"] == 2
    assert "61.2" in good.markdown and "| island | syntax | 100.0 | 3 |" in good.markdown


def test_multiple_choice_oracle_preferring_gold_scores_100(tmp_path):
    path = _write_jsonl(tmp_path / "mc.jsonl", MC_ITEMS)
    gold_texts = [
        it["context"] + continuation(it["context"], it["choices"][it["gold"]], registry.get_family("decoder"))
        for it in MC_ITEMS
    ]
    result = run_task(f"mc:{path}", _oracle(gold_texts), EvalOptions())
    assert result.metrics == {"accuracy": 100.0, "accuracy_norm": 100.0, "items": 3, "truncated_choices": 0}
    wrong = [
        it["context"]
        + continuation(it["context"], it["choices"][1 - min(it["gold"], 1)], registry.get_family("decoder"))
        for it in MC_ITEMS
    ]
    assert run_task(f"mc:{path}", _oracle(wrong), EvalOptions()).metrics["accuracy"] == 0.0


def test_choices_longer_than_the_context_are_scored_on_their_tail_and_counted(tmp_path):
    tok = ByteTokenizer()
    items = [{"context": "Pick:", "choices": ["x" * 40, "y"], "gold": 1}]
    model = EvalModel(
        OracleLM([tok.encode("Pick: y", bos=True)], tok.vocab_size, max_seq_len=16), tok, registry.get_family("decoder")
    )
    result = run_task(f"mc:{_write_jsonl(tmp_path / 'long.jsonl', items)}", model, EvalOptions())
    assert result.metrics["truncated_choices"] == 1 and result.metrics["accuracy"] == 100.0
    assert "1 choices longer than the context" in result.summary


def test_raw_and_length_normalised_accuracy_differ_as_computed_by_hand(tmp_path):
    tok = ByteTokenizer()
    p = torch.full((tok.vocab_size,), 0.45 / (tok.vocab_size - 2))
    p[ord("a")], p[ord("b")] = 0.5, 0.05  # log P: a -0.69, b -3.00 nats
    model = EvalModel(UnigramLM(p.log()), tok, registry.get_family("decoder"))
    # Item 0: "aaaaaaaa" costs 8 x 0.69 = 5.55 nats (0.69 per byte); "b" costs 3.00 nats (3.00 per byte).
    # Raw picks the short "b", per byte picks "aaaaaaaa" (gold). Item 1: both rules pick "a" (gold).
    items = [
        {"context": "", "choices": ["aaaaaaaa", "b"], "gold": 0},
        {"context": "", "choices": ["a", "bb"], "gold": 0},
    ]
    result = run_task(f"mc:{_write_jsonl(tmp_path / 'n.jsonl', items)}", model, EvalOptions())
    assert result.metrics["accuracy"] == 50.0 and result.metrics["accuracy_norm"] == 100.0
    assert [(d["raw"], d["norm"]) for d in result.details["predictions"]] == [(1, 0), (0, 0)]
    # 95% intervals from the counts (1 of 2 raw, 2 of 2 per byte), in the record and on the terminal line
    lo, hi = wilson_interval(1, 2)
    assert result.details["accuracy_ci95"] == pytest.approx([100 * lo, 100 * hi])
    assert result.details["accuracy_norm_ci95"][1] == 100.0 and result.details["accuracy_norm_ci95"][0] < 100.0
    assert f"50.0% raw ({100 * lo:.1f}-{100 * hi:.1f})" in result.summary
    assert 8 * math.log(0.5) < math.log(0.05) < math.log(0.5)  # the hand computation above holds


def test_t5_scores_blimp_and_multiple_choice_but_not_bpb(blimp_dir, tmp_path, one_thread):
    torch.manual_seed(0)
    family, cfg = registry.get_config("t5-debug")
    model = EvalModel(
        registry.build_model(family, cfg).eval(), ByT5Tokenizer(), registry.get_family(family), batch_size=4
    )
    blimp = run_task("blimp", model, EvalOptions(data_dir=blimp_dir))
    assert blimp.metrics["pairs"] == 5 and 0.0 <= blimp.metrics["accuracy"] <= 100.0
    mc = run_task(f"mc:{_write_jsonl(tmp_path / 'mc.jsonl', MC_ITEMS)}", model, EvalOptions())
    assert mc.metrics["items"] == 3
    assert (
        continuation("Question:", "answer", registry.get_family("t5")) == "answer"
    )  # no seam space for an encoder-decoder
    with pytest.raises(UserError, match="encoder-decoder"):
        run_task("bpb", model, EvalOptions(file=tmp_path / "mc.jsonl"))


@pytest.mark.parametrize(
    "lines, line_no, message",
    [
        (['{"context": "a", "choices": ["x", "y"]}'], 1, "missing field(s) 'gold'"),
        (['{"context": "a", "choices": ["x", "y"], "gold": 0}', "{not json"], 2, "not valid JSON"),
        (
            [
                '{"context": "a", "choices": ["x", "y"], "gold": 0}',
                '{"context": "a", "choices": ["x", "y"], "gold": 2}',
            ],
            2,
            "'gold' must be an index from 0 to 1",
        ),
        (['{"context": "a", "choices": ["x"], "gold": 0}'], 1, "at least 2 choices"),
        (['{"context": "a", "choices": ["x", ""], "gold": 0}'], 1, "a choice is empty"),
        (['{"context": "a", "choices": "xy", "gold": 0}'], 1, "list of strings"),
        (["[1, 2]"], 1, "expected a JSON object"),
    ],
)
def test_bad_multiple_choice_lines_name_file_and_line(tmp_path, lines, line_no, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_multiple_choice(path)
    assert f"{path}:{line_no}" in str(err.value) and message in str(err.value)


def test_fixed_choice_count_empty_file_and_missing_blimp_field(tmp_path):
    path = _write_jsonl(tmp_path / "three.jsonl", [MC_ITEMS[1], MC_ITEMS[0]])
    with pytest.raises(UserError, match=rf"{path}:2: needs exactly 2 choices, got 3"):
        load_multiple_choice(path, n_choices=2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"file {empty} is empty"):
        load_multiple_choice(empty)
    (tmp_path / "blimp").mkdir()
    _write_jsonl(
        tmp_path / "blimp" / "x.jsonl", [{"sentence_good": "A b.", "sentence_bad": "B a."}, {"sentence_good": "C."}]
    )
    with pytest.raises(UserError, match=r"x.jsonl:2: missing field\(s\) 'sentence_bad'"):
        load_blimp(tmp_path / "blimp")


def test_piqa_labels_must_match_questions(tmp_path):
    q = {"goal": "Open a jar", "sol1": "Twist it.", "sol2": "Paint it."}
    _write_jsonl(tmp_path / "valid.jsonl", [q, q])
    (tmp_path / "valid-labels.lst").write_text("0\n", encoding="utf-8")
    with pytest.raises(UserError, match="has 1 lines but .*valid.jsonl has a question on line 2"):
        load_piqa(tmp_path)
    (tmp_path / "valid-labels.lst").write_text("0\n2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"valid-labels.lst:2: gold index must be 0 or 1"):
        load_piqa(tmp_path)
    _write_jsonl(tmp_path / "valid.jsonl", [q, {"goal": "x", "sol1": "y"}])
    with pytest.raises(UserError, match=r"valid.jsonl:2: missing field\(s\) 'sol2'"):
        load_piqa(tmp_path)


def test_data_dir_comes_from_flag_env_or_beside_the_repo(tmp_path):
    repo, data = tmp_path / "repo", tmp_path / "shared" / "data"
    (repo / "sub").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("", encoding="utf-8")
    data.mkdir(parents=True)
    assert resolve_data_dir(None, None, repo / "sub") == data
    assert resolve_data_dir(tmp_path, "/elsewhere", repo) == tmp_path
    assert resolve_data_dir(None, str(repo), tmp_path) == repo
    with pytest.raises(UserError, match="STLM_DATA_DIR"):
        resolve_data_dir(None, str(tmp_path / "nope"), repo)
    with pytest.raises(UserError, match="has no blimp/"):
        run_task("blimp", _oracle([]), EvalOptions(data_dir=data))
