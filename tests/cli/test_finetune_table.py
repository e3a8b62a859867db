"""The fine-tuning report says so when a classifier answers every example alike."""

from __future__ import annotations

from stlm.cli.tables import one_answer_note, print_finetune


def _results(generated, chosen, targets, kind="classification"):
    rows = [
        {"index": i, "input": f"x{i}", "target": t, "prediction": g, **({"prediction_logprob": c} if c else {})}
        for i, (g, c, t) in enumerate(zip(generated, chosen, targets))
    ]
    scores = {"examples": len(rows), "accuracy": 0.5, "accuracy_logprob": 0.5, "loss": 0.3}
    return {
        "task": "topic",
        "kind": kind,
        "scored_on": "test",
        "initial": scores,
        "finetuned": scores,
        "baselines": {},
        "predictions": rows,
    }


def test_one_label_by_logprob_is_named_in_the_report(capsys):
    results = _results(["a", "b", "a"], ["a", "a", "a"], ["a", "b", "b"])
    print_finetune(results)
    out = capsys.readouterr().out
    assert "all 3 examples the same answer ('a', by label log-probability)" in out
    assert out.count("note:") == 1


def test_one_generated_answer_is_named_when_the_label_choice_varies():
    note = one_answer_note(_results(["zz", "zz"], ["a", "b"], ["a", "b"]))
    assert note is not None and "('zz', generated)" in note


def test_no_note_when_answers_vary_or_nothing_could_vary():
    assert one_answer_note(_results(["a", "b"], ["a", "b"], ["a", "a"])) is None  # answers vary
    assert one_answer_note(_results(["a", "a"], ["a", "a"], ["a", "a"])) is None  # one label in the split
    assert one_answer_note(_results(["s", "s"], [None, None], ["s", "t"], kind="summarization")) is None
    assert one_answer_note({**_results([], [], []), "predictions": []}) is None
