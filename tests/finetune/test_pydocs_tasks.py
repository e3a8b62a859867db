"""The built-in docstring tasks on a small fake standard library (fast) and their pieces."""

from __future__ import annotations

from pathlib import Path

from stlm.finetune.pydocs_tasks import TOPICS, build_task, lead_sentence, summary_example


def _fake_stdlib(root: Path) -> Path:
    """Three packages of three topics, 30 distinct docstrings each, plus one shared boilerplate docstring."""
    for module, word in (("tkinter", "widget"), ("asyncio", "event loop"), ("unittest", "test case")):
        (root / module).mkdir(parents=True)
        funcs = "".join(
            f'def f{i}():\n    """Summary {i} of the {word}.\n\n    The body tells more about {word} number {i} here.\n    """\n\n'
            f'def g{i}():\n    """Return self==value."""\n\n'
            for i in range(30)
        )
        (root / module / "__init__.py").write_text(f'"""The {module} package."""\n\n' + funcs, encoding="utf-8")
    (root / "unlisted.py").write_text('"""A module in no topic."""\n', encoding="utf-8")
    return root


def test_topic_task_labels_modules_and_splits_deterministically(tmp_path):
    stdlib = _fake_stdlib(tmp_path / "lib")
    splits = build_task("docstring-topic", stdlib)
    everything = [ex for split in splits.values() for ex in split]
    assert len(everything) == 3 * 31  # 30 functions + the package docstring; boilerplate and unlisted dropped
    assert {ex.target for ex in everything} == {"gui", "concurrency", "debugging"}
    assert all(ex.input != "Return self==value." for ex in everything)
    inputs = [{ex.input for ex in splits[s]} for s in ("train", "val", "test")]
    assert not (inputs[0] & inputs[1] or inputs[0] & inputs[2] or inputs[1] & inputs[2])
    assert build_task("docstring-topic", stdlib) == splits


def test_summary_task_maps_body_to_first_line(tmp_path):
    splits = build_task("docstring-summary", _fake_stdlib(tmp_path / "lib"))
    everything = [ex for split in splits.values() for ex in split]
    assert len(everything) == 90
    ex = next(e for e in everything if e.target == "Summary 7 of the widget.")
    assert ex.input == "The body tells more about widget number 7 here."


def test_summary_example_rules():
    assert summary_example("One line.\n\nA body long enough to count as a body, surely.").target == "One line."
    assert summary_example("Two\nlines.\n\nA body long enough to count as a body, surely.") is None
    assert summary_example("No body at all.") is None
    assert summary_example("Short.\n\nTiny body.") is None


def test_lead_sentence():
    assert lead_sentence("Returns a pair.  When called on NaN, raises.") == "Returns a pair."
    assert lead_sentence("First line\ncontinues here. Then more.") == "First line continues here."
    assert lead_sentence("No full stop\n\nsecond paragraph") == "No full stop"


def test_every_module_has_one_topic():
    modules = [m for ms in TOPICS.values() for m in ms]
    assert len(modules) == len(set(modules))


def test_unlabelled_docstrings_are_the_rest_of_the_stdlib_once_each(tmp_path, monkeypatch):
    from stlm.finetune import pydocs_tasks

    stdlib = _fake_stdlib(tmp_path / "lib")
    monkeypatch.setattr(pydocs_tasks, "MAX_PER_TOPIC", 20)  # 11 docstrings of each topic fall outside the task
    taken = {ex.input for split in build_task("docstring-topic", stdlib).values() for ex in split}
    rest = pydocs_tasks.unlabelled_docstrings("docstring-topic", stdlib)
    assert len(taken) == 3 * 20 and len(rest) == 3 * 11 + 1  # the capped ones and the module in no topic
    assert "A module in no topic." in rest and "Return self==value." not in rest  # boilerplate stays out
    assert not taken & set(rest) and rest == sorted(set(rest))
