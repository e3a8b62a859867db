"""BLiMP, PIQA and WikiText-2 read offline from a Hugging Face cache laid out as `datasets` writes it.

The cache is made in the test by a `datasets` builder carrying each set's Hub
name (namespace___name/config/version/hash/name-split.arrow + dataset_info.json,
the layout a real download leaves), then read with the Hub marked offline and
sockets refused, as on a machine that downloaded the sets once.
"""

from __future__ import annotations

import socket
from typing import ClassVar

import pytest
import torch

from stlm import registry
from stlm.errors import UserError
from stlm.evaluation import hub
from stlm.evaluation.blimp import load_blimp_hub
from stlm.evaluation.tasks import EvalModel, EvalOptions, resolve_data_dir, run_task
from stlm.tokenizers import ByteTokenizer
from tests.evaluation.fakes import OracleLM, UnigramLM

datasets = pytest.importorskip("datasets", reason="the Hugging Face path needs the optional `datasets` package")

BLIMP = {
    "adjunct_island": [("Who did you see?", "Who you did see?"), ("What fell?", "What fell fell?")],
    "causative": [("A cat sleeps.", "A cat sleep.")],
}
PIQA = [
    {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "paint the lid", "label": 0},
    {"goal": "Dry hands", "sol1": "use water", "sol2": "use a towel", "label": 1},
]
WIKI = " \n = Valkyria = \n \n Senjō no Valkyria 3 : <unk> Chronicles .\n"


def _cache_as_datasets_writes_it(cache, repo: str, config: str | None, split: str, rows: list[dict]) -> None:
    name = repo.split("/")[-1]

    class HubBuilder(datasets.GeneratorBasedBuilder):
        BUILDER_CONFIGS: ClassVar = [datasets.BuilderConfig(name=config or "default")]

        def _info(self):
            return datasets.DatasetInfo()

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=split)]

        def _generate_examples(self):
            yield from enumerate(rows)

    builder = HubBuilder(
        cache_dir=str(cache), dataset_name=name, repo_id=repo, config_name=config or "default", hash="0123abcd"
    )
    builder.download_and_prepare()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-datasets"
    for uid, pairs in BLIMP.items():
        rows = [{"sentence_good": g, "sentence_bad": b, "UID": uid, "field": "syntax"} for g, b in pairs]
        _cache_as_datasets_writes_it(cache, hub.BLIMP.repo, uid, "train", rows)
    _cache_as_datasets_writes_it(cache, hub.PIQA.repo, None, "validation", PIQA)
    lines = [{"text": line} for line in WIKI.splitlines(keepends=True)]
    _cache_as_datasets_writes_it(cache, hub.WIKITEXT2.repo, hub.WIKITEXT2.config, "validation", lines)
    # From here on the machine is offline: the Hub is marked so and sockets refuse.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr("stlm.evaluation.blimp.PHENOMENA", tuple(BLIMP))
    return cache


def _oracle(texts):
    tok = ByteTokenizer()
    model = OracleLM([tok.encode(t, bos=True) for t in texts], tok.vocab_size)
    return EvalModel(model, tok, registry.get_family("decoder"), batch_size=3)


def test_blimp_and_piqa_from_the_hub_cache(offline_cache):
    options = EvalOptions(data_dir=None, hf_cache_dir=offline_cache)
    good = run_task("blimp", _oracle([g for pairs in BLIMP.values() for g, _ in pairs]), options)
    assert good.metrics == {"accuracy": 100.0, "pairs": 3, "phenomena": 2}
    assert all(p.suffix == ".arrow" and offline_cache in p.parents for p in good.data_files)
    assert [len(p.pairs) for p in load_blimp_hub(1, offline_cache, tuple(BLIMP))] == [1, 1]

    right = ["Question: Open a jar\nAnswer: twist the lid", "Question: Dry hands\nAnswer: use a towel"]
    piqa = run_task("piqa", _oracle(right), options)
    assert piqa.metrics["accuracy"] == 100.0 and piqa.metrics["items"] == 2
    assert [d["gold"] for d in piqa.details["predictions"]] == [0, 1]


def test_wikitext2_from_the_hub_cache_equals_the_data_folder(offline_cache, tmp_path):
    folder = tmp_path / "data" / "wikitext-2"
    folder.mkdir(parents=True)
    (folder / "valid.txt").write_text(WIKI, encoding="utf-8")
    tok = ByteTokenizer()
    p = torch.rand(tok.vocab_size, generator=torch.Generator().manual_seed(0)) + 0.1
    model = EvalModel(UnigramLM((p / p.sum()).log()), tok, registry.get_family("decoder"))
    from_hub = run_task("wikitext2", model, EvalOptions(hf_cache_dir=offline_cache, context=16))
    from_dir = run_task("wikitext2", model, EvalOptions(data_dir=folder.parent, context=16))
    assert from_hub.metrics == from_dir.metrics and from_hub.details["n_bytes"] == len(WIKI.encode())


def test_a_set_in_neither_place_is_one_line_naming_both_ways(offline_cache, tmp_path):
    empty = tmp_path / "empty-cache"
    with pytest.raises(UserError) as err:
        run_task("piqa", _oracle([]), EvalOptions(hf_cache_dir=empty))
    message = str(err.value)
    assert "\n" not in message and "--data-dir" in message and "STLM_DATA_DIR" in message
    assert "baber/piqa" in message and "go online once" in message


def test_no_folder_given_and_none_beside_the_repo_means_the_hub(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "pyproject.toml").write_text("", encoding="utf-8")
    assert resolve_data_dir(None, None, tmp_path / "repo") is None
    with pytest.raises(UserError, match="--data-dir"):  # a folder that was named must exist
        resolve_data_dir(tmp_path / "nope", None, tmp_path / "repo")
