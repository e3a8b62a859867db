"""metrics.jsonl: appended one whole record per write; a torn or bad line never blocks a resume."""

import json

from stlm.training.logging import MetricsLog, read_metrics


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_each_record_is_one_line_appended(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 4):
        log.write({"step": step, "loss": 1.0 / step})
    assert [json.loads(line)["step"] for line in _lines(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_a_torn_last_line_is_skipped_with_a_note(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo', encoding="utf-8")
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    err = capsys.readouterr().err
    assert "skipped 1 unreadable line" in err and str(path) in err


def test_resume_drops_bad_lines_and_later_steps_and_appends_cleanly(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    bad = ["[1, 2]", '{"step": null}', '{"step": "x"}', "not json", "\xff\xfe"]
    good = ['{"step": 1, "loss": 2.0}', '{"step": 2, "loss": 1.5}', '{"step": 3, "loss": 1.2}']
    path.write_text("\n".join(good[:2] + bad + good[2:]) + '\n{"step": 2, "lo', encoding="utf-8")
    log = MetricsLog(path, resume_step=2)
    assert "unreadable" in capsys.readouterr().err
    log.write({"step": 3, "loss": 1.1})
    assert [json.loads(line) for line in _lines(path)] == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 3, "loss": 1.1},
    ]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))
