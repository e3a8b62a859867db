"""Property tests of the recipe and JSONL readers: any input gives a result or one `UserError`, never another error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stlm.config import RunConfig, load_run_config
from stlm.data.local import load_jsonl
from stlm.errors import UserError
from stlm.evaluation.jsonl import read_jsonl
from stlm.finetune.config import load_finetune_config

# Derandomized: the same examples on every run, so CI never fails on a case no one has seen; the
# @example lines keep the cases a random search once found.
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["model", "arch", "data", "objective", "optim", "train", "runtime", "nope"])
SECTION_KEYS = st.sampled_from(["lr", "eps", "seed", "steps", "source", "seq_len", "split_seed", "name", "beta1", "x"])
# Recipes that look like recipes: known sections and keys with values of any type.
RECIPES = st.dictionaries(KEYS, st.one_of(SCALARS, st.dictionaries(SECTION_KEYS, SCALARS, max_size=4)), max_size=5)
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


def write(folder: Path, data: bytes, suffix: str) -> Path:
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


@SETTINGS
@given(raw=st.one_of(RECIPES, JSON))
@example(raw={"model": {"lr": None, "name": None}, "arch": None})
@example(raw={"\n": None})
def test_any_recipe_data_is_a_run_config_or_one_user_error(raw):
    try:
        cfg = RunConfig.from_dict(raw)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg, RunConfig) and RunConfig.from_dict(cfg.to_dict()) == cfg  # what loads, round-trips


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".toml"]))
@example(data=DEEP.encode(), suffix=".json")
@example(data=b"a = " + b"[" * 100_000, suffix=".toml")
@example(data=b"\xff\xfe{}", suffix=".json")
def test_any_recipe_file_is_read_or_refused_with_one_user_error(folder, data, suffix):
    path = write(folder, data, suffix)
    for reader in (load_run_config, load_finetune_config):
        try:
            reader(path)
        except UserError as exc:
            assert str(path) in str(exc)


@SETTINGS
@given(recipe=RECIPES)
def test_recipe_files_written_as_json_read_as_the_data_says(folder, recipe):
    path = write(folder, json.dumps(recipe).encode(), ".json")
    try:
        expected = RunConfig.from_dict(json.loads(json.dumps(recipe)), source=str(path))
    except UserError:
        with pytest.raises(UserError):
            load_run_config(path)
    else:
        assert load_run_config(path) == expected


@SETTINGS
@given(data=st.binary(max_size=400))
@example(data=b'{"text": ' + DEEP.encode() + b"}\n")
@example(data=b'{"text": "\\ud800"}\n')
@example(data=b"\xef\xbb\xbf" + b'{"text": "bom"}\n')
def test_any_jsonl_corpus_file_gives_texts_or_one_user_error(folder, data):
    path = write(folder, data, ".jsonl")
    try:
        docs = load_jsonl(path)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert docs and all(isinstance(d, str) and d for d in docs)


@SETTINGS
@given(texts=st.lists(st.text(min_size=1), min_size=1, max_size=8))
def test_jsonl_corpus_reads_back_the_texts_written(folder, texts):
    path = write(
        folder, "".join(json.dumps({"text": t}) + "\n" for t in texts).encode("utf-8", "surrogatepass"), ".jsonl"
    )
    try:
        assert list(load_jsonl(path)) == texts
    except UserError as exc:  # only texts that are not UTF-8 (lone surrogates) are refused
        assert any(any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts), exc


@SETTINGS
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.lists(JSON, max_size=5).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
    )
)
@example(data=b'{"context": "x", "choices": ' + DEEP.encode() + b"}\n")
def test_any_task_jsonl_file_gives_checked_objects_or_one_user_error(folder, data):
    path = write(folder, data, ".jsonl")
    try:
        rows = list(read_jsonl(path, ("context", "choices"), what="test"))
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert rows and all(isinstance(obj, dict) and {"context", "choices"} <= set(obj) for _, obj in rows)
