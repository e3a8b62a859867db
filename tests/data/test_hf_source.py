from __future__ import annotations

import sys
import types

import pytest

from stlm.data import load_documents
from stlm.data.hf import parse_hf_spec
from stlm.errors import UserError


def _fake_datasets(load_dataset) -> types.ModuleType:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    return module


class _FakeDataset:
    def __init__(self, columns: dict[str, list]) -> None:
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, name: str) -> list:
        return self._columns[name]


def test_spec_parsing() -> None:
    assert parse_hf_spec("hf:roneneldan/TinyStories") == ("roneneldan/TinyStories", None)
    assert parse_hf_spec("hf:wikitext:wikitext-2-raw-v1") == ("wikitext", "wikitext-2-raw-v1")
    with pytest.raises(UserError):
        parse_hf_spec("hf:")


def test_missing_datasets_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match=r"pip install stlm\[hf\]"):
        load_documents("hf:wikitext:wikitext-2-raw-v1")


def test_unavailable_dataset_offline_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(name, config, split):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(load_dataset))
    with pytest.raises(UserError, match="could not be loaded offline") as err:
        load_documents("hf:wikitext:wikitext-2-raw-v1")
    assert "'wikitext'" in str(err.value) and "wikitext-2-raw-v1" in str(err.value)


def test_rows_become_documents_from_the_text_field(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def load_dataset(name, config, split):
        seen.update(name=name, config=config, split=split)
        return _FakeDataset({"story": ["once", "", "upon"], "id": [1, 2, 3]})

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(load_dataset))
    assert load_documents("hf:user/stories", text_field="story") == ["once", "upon"]
    assert seen == {"name": "user/stories", "config": None, "split": "train"}
    with pytest.raises(UserError, match="no 'text' column"):
        load_documents("hf:user/stories")


def test_streaming_reads_rows_lazily_and_stops_at_max_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {"rows": 0, "kwargs": None}

    def rows():
        for i in range(1000):
            seen["rows"] += 1
            yield {"text": f"row {i}" if i % 3 else "", "id": i}  # every third row is empty

    def load_dataset(name, config, split, **kwargs):
        seen["kwargs"] = kwargs
        return rows()  # an iterable, as datasets' IterableDataset is

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(load_dataset))
    docs = load_documents("hf:some/corpus", streaming=True, max_documents=5)
    assert seen["kwargs"] == {"streaming": True}
    assert docs == ["row 1", "row 2", "row 4", "row 5", "row 7"]
    assert seen["rows"] == 8  # stopped reading once five texts were in
    with pytest.raises(UserError, match="no 'body' field"):
        load_documents("hf:some/corpus", streaming=True, text_field="body")
