"""The README's Python API example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API\n") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_python_api_example_runs_verbatim(tiny_run, tmp_path, monkeypatch, capsys, one_thread):
    code = python_api_example()
    assert 'stlm.load("runs/tiny")' in code and len(code.strip().splitlines()) <= 6
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny").symlink_to(tiny_run, target_is_directory=True)  # the run the README trains
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    scores = out.splitlines()[-1]  # the sample before it may hold newlines of its own
    assert re.fullmatch(r"[0-9.]+ \[-[0-9.]+, -[0-9.]+\]", scores), out
    assert len(out) > len(scores) + 1
