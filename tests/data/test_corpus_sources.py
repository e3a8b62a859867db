from __future__ import annotations

import json
from pathlib import Path

import pytest

from stlm.data import corpus_fingerprint, list_corpora, load_documents
from stlm.errors import UserError


def test_text_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line, café\n", encoding="utf-8")
    assert load_documents(str(path)) == ["first line\nsecond line, café\n"]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.md"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert load_documents(str(path)) == ["hello"]


def test_directory_reads_text_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("two", encoding="utf-8")
    (tmp_path / "a.txt").write_text("one", encoding="utf-8")
    (tmp_path / "b" / "z.txt").write_text("three", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")  # skipped, not an error
    (tmp_path / "data.bin").write_bytes(b"\xff\xfe")  # not a text suffix: ignored
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("hidden", encoding="utf-8")
    assert load_documents(str(tmp_path)) == ["one", "two", "three"]


def test_jsonl_with_custom_field(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [{"body": "alpha", "id": 1}, {"body": "beta\u2028gamma", "id": 2}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    assert load_documents(str(path), text_field="body") == ["alpha", "beta\u2028gamma"]


def test_jsonl_missing_field_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "ok"}\n\n{"body": "no text here"}\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_documents(str(path))
    message = str(err.value)
    assert f"{path}:3" in message and "'text'" in message and "'body'" in message


def test_jsonl_bad_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_documents(str(path))


def test_non_utf8_file_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(UserError) as err:
        load_documents(str(path))
    assert str(path) in str(err.value) and "offset 3" in str(err.value) and "UTF-8" in str(err.value)


def test_non_utf8_file_inside_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(UserError, match="bad.txt is not UTF-8"):
        load_documents(str(tmp_path))


def test_empty_file_and_empty_directory_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        load_documents(str(empty))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(UserError, match="no non-empty text files"):
        load_documents(str(folder))
    jsonl = tmp_path / "blank.jsonl"
    jsonl.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no non-empty"):
        load_documents(str(jsonl))


def test_unknown_corpus_lists_builtin_names(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_documents("no-such-corpus")
    for info in list_corpora():
        assert info.name in str(err.value)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "corpus.txt"
    with pytest.raises(UserError, match="does not exist"):
        load_documents(str(missing))
    with pytest.raises(UserError, match="neither a built-in corpus"):
        load_documents("no-such-corpus")


def test_list_corpora_has_the_builtins_default_first() -> None:
    names = [c.name for c in list_corpora()]
    assert names[0] == "pydocs" and "shakespeare" in names
    assert all(c.description for c in list_corpora())


def test_fingerprint_respects_document_boundaries() -> None:
    assert corpus_fingerprint(["ab", "c"]) != corpus_fingerprint(["a", "bc"])
    assert corpus_fingerprint(["ab", "c"]) == corpus_fingerprint(iter(["ab", "c"]))
    assert corpus_fingerprint(["x"]) != corpus_fingerprint(["x", ""])
    assert len(corpus_fingerprint([])) == 64
