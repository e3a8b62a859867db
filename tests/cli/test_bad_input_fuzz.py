"""Hundreds of bad inputs across every subcommand: each is one line on stderr, exit 2, and touches nothing.

The table below is what a hostile new user types: bad flags and ranges, bad
`--set` values, broken recipes, data files, tokenizer files, fine-tuning files
and corrupted copies of a real (tiny) run. Every case runs in-process through
`stlm.cli.main.main` (a few through subprocesses, side by side, as the console script) and
must end with exit 2, exactly one stderr line `stlm ...: error: ...`, no
traceback, and every file that was in the test's folder before it unchanged
(stat per case; bytes compared once at the end). The counts are printed
(`pytest -s`) and, with STLM_FUZZ_REPORT=PATH, written there as JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from stlm.checkpoint import LOCK_FILE
from stlm.cli.main import main

DEEP = "[" * 100_000 + "]" * 100_000  # past any recursion limit of Python's JSON and TOML parsers
BINARY = bytes(range(256)) * 8  # not UTF-8, not JSON, not a model


def write_files(root: Path, corpus_dir: Path) -> None:
    """Every bad file the table names, under root/files; a small good corpus under root/corpus."""
    files = root / "files"
    files.mkdir()
    put = {
        "afile.txt": "just a file\n",
        "empty.txt": "",
        "blank.txt": "  \n\n ",
        "binary.txt": BINARY,
        "binary.json": BINARY,
        "binary.toml": BINARY,
        "binary.jsonl": BINARY,
        "binary.csv": BINARY,
        "latin1.txt": "caf\xe9 ol\xe9\n".encode("latin-1"),
        "deep.json": DEEP,
        "deep.toml": "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep.jsonl": '{"text": ' + DEEP + "}\n",
        "deep-task.jsonl": '{"input": "x", "target": ' + DEEP + "}\n",
        "deep-mc.jsonl": '{"context": "x", "choices": ' + DEEP + ', "label": 0}\n',
        "list.json": "[1, 2, 3]",
        "number.json": "3",
        "bad.json": "{not json",
        "bad.toml": "model = = 3\n[[",
        "recipe.yaml": "model: decoder-tiny\n",
        "unknown-key.toml": 'model = "decoder-tiny"\nsurprise = 1\n',
        "unknown-section.toml": "[nope]\nx = 1\n",
        "bad-type.toml": '[optim]\nlr = "fast"\n',
        "bad-range.toml": "[optim]\nlr = -1.0\n",
        "bad-eps.toml": "[optim]\neps = -1.0\n",
        "big-seed.toml": f"[train]\nseed = {2**62 * 3}\n",
        "bool-steps.json": '{"train": {"steps": true}}',
        "section-not-table.json": '{"optim": 3}',
        "model-no-name.toml": "[model]\nd_model = 64\n",
        "model-table-bad.json": '{"model": {"name": "no-such-preset"}}',
        "finetune-bad.toml": '[task]\nname = "no-such-task"\n',
        "finetune-labels.toml": '[task]\nname = "docstring-topic"\nlabels = ",,,"\n',
        "not-json.jsonl": "this is not json\n",
        "array.jsonl": "[1, 2]\n",
        "no-text.jsonl": '{"body": "x"}\n',
        "number-text.jsonl": '{"text": 3}\n',
        "surrogate.jsonl": '{"text": "\\ud800"}\n',
        "empty-texts.jsonl": '{"text": ""}\n\n',
        "texts.jsonl": '{"input": "sky sea"}\n',
        "bad.csv": b"input,target\n\xff\xfe,x\n",
        "huge-field.csv": "input,target\n" + "x" * 200_000 + ",y\n",
        "nul.csv": "input,target\na\0b,c\n",
        "no-column.csv": "question,answer\na,b\n",
        "short-row.csv": "input,target\nonly-input\n",
        "empty-target.csv": "input,target\na, \n",
        "header-only.csv": "input,target\n",
        "task.txt": "input target\n",
        "task-not-json.jsonl": "nope\n",
        "task-array.jsonl": '["input", "target"]\n',
        "task-missing.jsonl": '{"input": "x"}\n',
        "task-number.jsonl": '{"input": 3, "target": "y"}\n',
        "task-empty-target.jsonl": '{"input": "x", "target": ""}\n',
        "mc-bad.jsonl": '{"context": "x"}\n',
        "mc-label.jsonl": '{"context": "x", "choices": ["a", "b"], "label": 7}\n',
        "mc-not-json.jsonl": "{\n",
        "tok-list.json": "[1, 2]",
        "tok-wordlevel.json": json.dumps({"model": {"type": "WordLevel", "vocab": {}}}),
        "spiece-bad.model": b"\x00not a sentencepiece model",
        "metrics.jsonl": "{not json\n",
    }
    for name, content in put.items():
        path = files / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    (files / "folder").mkdir()
    (files / "empty-dir").mkdir()
    (files / "folder" / ".hidden.txt").write_text("hidden", encoding="utf-8")
    os.mkfifo(files / "fifo")
    (files / "fifo.jsonl").symlink_to(files / "fifo")
    (root / "no-metrics").mkdir()
    (root / "bad-metrics").mkdir()
    (root / "bad-metrics" / "metrics.jsonl").write_text("{not json\n", encoding="utf-8")
    (root / "hf-bad").mkdir()
    (root / "hf-bad" / "config.json").write_text("{not json", encoding="utf-8")
    (root / "hf-deep").mkdir()
    (root / "hf-deep" / "config.json").write_text(DEEP, encoding="utf-8")
    (root / "hf-binary").mkdir()
    (root / "hf-binary" / "config.json").write_bytes(BINARY)
    (root / "hf-list").mkdir()
    (root / "hf-list" / "config.json").write_text("[]", encoding="utf-8")
    (root / "hf-noweights").mkdir()
    (root / "hf-noweights" / "config.json").write_text(
        json.dumps({"model_type": "t5", "d_model": 8, "num_layers": 1}), encoding="utf-8"
    )
    corpus = root / "corpus"
    corpus.mkdir()
    for i, path in enumerate(sorted(corpus_dir.iterdir())[:6]):
        (corpus / f"{i}.txt").write_text(path.read_text(encoding="utf-8")[:4000], encoding="utf-8")


def rewrite(ckpt: Path, name: str, content: bytes | None) -> None:
    """Replace (or with None delete) one checkpoint file and re-hash the manifest, as someone editing it would."""
    path = ckpt / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    manifest_path = ckpt / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if content is None:
        manifest.pop(name, None)
    else:
        manifest[name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def corrupt_runs(root: Path, tiny_run: Path) -> None:
    """Copies of the tiny run, each broken in one way, under root/bad-runs/NAME."""

    def copy(name: str) -> Path:
        dest = root / "bad-runs" / name
        shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns("evals", "*.png", "report.md"))
        return sorted((dest / "checkpoints").iterdir())[-1]

    ckpt = copy("truncated-weights")
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:100])
    ckpt = copy("flipped-weights")
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-7] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    rewrite(copy("rehashed-garbage-weights"), "model.safetensors", BINARY)
    rewrite(copy("rehashed-short-weights"), "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    rewrite(copy("no-weights"), "model.safetensors", None)
    ckpt = copy("config-not-json")
    (ckpt / "config.json").write_text("{not json", encoding="utf-8")
    rewrite(copy("rehashed-config-not-json"), "config.json", b"{not json")
    rewrite(copy("rehashed-config-deep"), "config.json", DEEP.encode())
    rewrite(copy("rehashed-config-binary"), "config.json", BINARY)
    rewrite(copy("rehashed-config-list"), "config.json", b"[]")
    rewrite(copy("rehashed-config-empty"), "config.json", b"{}")
    rewrite(copy("rehashed-state-not-json"), "state.json", b"{not json")
    rewrite(copy("rehashed-state-deep"), "state.json", DEEP.encode())
    rewrite(copy("no-state"), "state.json", None)
    ckpt = copy("manifest-not-json")
    (ckpt / "manifest.json").write_text("{not json", encoding="utf-8")
    ckpt = copy("manifest-binary")
    (ckpt / "manifest.json").write_bytes(BINARY)
    ckpt = copy("manifest-deep")
    (ckpt / "manifest.json").write_text(DEEP, encoding="utf-8")
    ckpt = copy("no-manifest")
    (ckpt / "manifest.json").unlink()
    ckpt = copy("no-checkpoints")
    shutil.rmtree(ckpt.parent)
    (ckpt.parent).mkdir()
    ckpt = copy("run-config-not-json")
    shutil.rmtree(ckpt.parent)
    (ckpt.parent.parent / "config.json").write_text("{not json", encoding="utf-8")


# (what it tries, argv). {F} is the folder of bad files, {R} the good tiny run (a copy), {B} the corrupted runs,
# {C} a small good corpus, {T} the test's folder (new outputs go there, under names that do not exist yet).
TRAIN = ["--data", "{C}", "--cache-dir", "{T}/cache", "--steps", "1", "--quiet", "--out", "{T}/new-run"]
CASES: list[tuple[str, list[str]]] = [
    # models / corpora
    ("unknown model name", ["models", "no-such-model"]),
    ("unknown t5 size", ["models", "t5-efficient-gigantic"]),
    ("unknown family", ["models", "--family", "nope"]),
    ("models bad flag", ["models", "--bogus"]),
    ("corpora extra argument", ["corpora", "extra"]),
    ("unknown command", ["nope"]),
    ("no command", []),
    # prepare: sources
    ("prepare missing file", ["prepare", "--data", "{F}/missing.txt"]),
    ("prepare unknown corpus", ["prepare", "--data", "no-such-corpus"]),
    ("prepare FIFO", ["prepare", "--data", "{F}/fifo"]),
    ("prepare FIFO named .jsonl", ["prepare", "--data", "{F}/fifo.jsonl"]),
    ("prepare empty file", ["prepare", "--data", "{F}/empty.txt"]),
    ("prepare blank file", ["prepare", "--data", "{F}/blank.txt"]),
    ("prepare binary file", ["prepare", "--data", "{F}/binary.txt"]),
    ("prepare latin-1 file", ["prepare", "--data", "{F}/latin1.txt"]),
    ("prepare empty folder", ["prepare", "--data", "{F}/empty-dir"]),
    ("prepare folder of hidden files", ["prepare", "--data", "{F}/folder"]),
    ("prepare binary jsonl", ["prepare", "--data", "{F}/binary.jsonl"]),
    ("prepare deep jsonl", ["prepare", "--data", "{F}/deep.jsonl"]),
    ("prepare jsonl not json", ["prepare", "--data", "{F}/not-json.jsonl"]),
    ("prepare jsonl array line", ["prepare", "--data", "{F}/array.jsonl"]),
    ("prepare jsonl no text field", ["prepare", "--data", "{F}/no-text.jsonl"]),
    ("prepare jsonl number text", ["prepare", "--data", "{F}/number-text.jsonl"]),
    ("prepare jsonl lone surrogate", ["prepare", "--data", "{F}/surrogate.jsonl"]),
    ("prepare jsonl empty texts", ["prepare", "--data", "{F}/empty-texts.jsonl"]),
    ("prepare jsonl other text field", ["prepare", "--data", "{F}/no-text.jsonl", "--text-field", "nope"]),
    ("prepare hf without network", ["prepare", "--data", "hf:no-such/dataset-xyz"]),
    # prepare: flags
    ("prepare val-fraction 0.9", ["prepare", "--data", "{C}", "--val-fraction", "0.9"]),
    ("prepare val-fraction 0", ["prepare", "--data", "{C}", "--val-fraction", "0"]),
    ("prepare val-fraction -1", ["prepare", "--data", "{C}", "--val-fraction", "-1"]),
    ("prepare val-fraction nan", ["prepare", "--data", "{C}", "--val-fraction", "nan"]),
    ("prepare val-fraction word", ["prepare", "--data", "{C}", "--val-fraction", "half"]),
    ("prepare split-seed 2**64", ["prepare", "--data", "{C}", "--split-seed", str(2**64)]),
    ("prepare split-seed -2**64", ["prepare", "--data", "{C}", "--split-seed", str(-(2**64))]),
    ("prepare split-seed float", ["prepare", "--data", "{C}", "--split-seed", "1.5"]),
    ("prepare max-documents -1", ["prepare", "--data", "{C}", "--max-documents", "-1"]),
    ("prepare workers -1", ["prepare", "--data", "{C}", "--workers", "-1"]),
    ("prepare cache-dir is a file", ["prepare", "--data", "{C}", "--cache-dir", "{F}/afile.txt"]),
    ("prepare unknown tokenizer", ["prepare", "--data", "{C}", "--tokenizer", "nope"]),
    ("prepare bpe missing", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/missing.json"]),
    ("prepare bpe binary", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/binary.json"]),
    ("prepare bpe deep", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/deep.json"]),
    ("prepare bpe list", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/tok-list.json"]),
    ("prepare bpe not json", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/bad.json"]),
    ("prepare bpe folder", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/folder"]),
    ("prepare bpe FIFO", ["prepare", "--data", "{C}", "--tokenizer", "bpe:{F}/fifo"]),
    ("prepare spiece missing", ["prepare", "--data", "{C}", "--tokenizer", "spiece:{F}/missing.model"]),
    ("prepare spiece garbage", ["prepare", "--data", "{C}", "--tokenizer", "spiece:{F}/spiece-bad.model"]),
    ("prepare spiece binary", ["prepare", "--data", "{C}", "--tokenizer", "spiece:{F}/binary.txt"]),
    # train-tokenizer
    ("tokenizer vocab 0", ["train-tokenizer", "--data", "{C}", "--vocab-size", "0", "--out", "{T}/tok.json"]),
    ("tokenizer vocab -1", ["train-tokenizer", "--data", "{C}", "--vocab-size", "-1", "--out", "{T}/tok.json"]),
    ("tokenizer vocab tiny", ["train-tokenizer", "--data", "{C}", "--vocab-size", "10", "--out", "{T}/tok.json"]),
    ("tokenizer vocab word", ["train-tokenizer", "--data", "{C}", "--vocab-size", "many", "--out", "{T}/t.json"]),
    ("tokenizer vocab 2**70", ["train-tokenizer", "--data", "{C}", "--vocab-size", str(2**70), "--out", "{T}/t"]),
    (
        "tokenizer min-frequency -5",
        ["train-tokenizer", "--data", "{C}", "--vocab-size", "300", "--min-frequency", "-5", "--out", "{T}/t.json"],
    ),
    ("tokenizer no --out", ["train-tokenizer", "--data", "{C}", "--vocab-size", "300"]),
    ("tokenizer --out folder", ["train-tokenizer", "--data", "{C}", "--vocab-size", "300", "--out", "{F}/folder"]),
    (
        "tokenizer --out under a file",
        ["train-tokenizer", "--data", "{C}", "--vocab-size", "300", "--out", "{F}/afile.txt/tok.json"],
    ),
    ("tokenizer bad data", ["train-tokenizer", "--data", "{F}/binary.txt", "--vocab-size", "300", "--out", "{T}/t"]),
    # train: flags
    ("train stop-at -3", ["train", *TRAIN, "--stop-at", "-3"]),
    ("train stop-at 0", ["train", *TRAIN, "--stop-at", "0"]),
    ("train steps 0", ["train", *TRAIN, "--steps", "0"]),
    ("train steps -1", ["train", *TRAIN, "--steps", "-1"]),
    ("train steps word", ["train", *TRAIN, "--steps", "many"]),
    ("train batch-size 0", ["train", *TRAIN, "--batch-size", "0"]),
    ("train seq-len 1", ["train", *TRAIN, "--seq-len", "1"]),
    ("train lr -1", ["train", *TRAIN, "--lr", "-1"]),
    ("train lr 0", ["train", *TRAIN, "--lr", "0"]),
    ("train lr nan", ["train", *TRAIN, "--lr", "nan"]),
    ("train grad-accum 0", ["train", *TRAIN, "--grad-accum", "0"]),
    ("train keep-checkpoints 0", ["train", *TRAIN, "--keep-checkpoints", "0"]),
    ("train eval-every -1", ["train", *TRAIN, "--eval-every", "-1"]),
    ("train threads -1", ["train", *TRAIN, "--threads", "-1"]),
    ("train unknown optimizer", ["train", *TRAIN, "--optimizer", "sgd"]),
    ("train unknown objective", ["train", *TRAIN, "--objective", "magic"]),
    ("train unknown precision", ["train", *TRAIN, "--precision", "fp8"]),
    ("train unknown model", ["train", *TRAIN, "--model", "no-such-model"]),
    ("train data missing", ["train", *TRAIN, "--data", "{F}/missing.txt"]),
    ("train data FIFO", ["train", *TRAIN, "--data", "{F}/fifo"]),
    ("train data binary", ["train", *TRAIN, "--data", "{F}/binary.txt"]),
    ("train data deep jsonl", ["train", *TRAIN, "--data", "{F}/deep.jsonl"]),
    ("train --out is a file", ["train", *TRAIN, "--out", "{F}/afile.txt"]),
    ("train --out under a file", ["train", *TRAIN, "--out", "{F}/afile.txt/run"]),
    ("train cache-dir is a file", ["train", *TRAIN, "--cache-dir", "{F}/afile.txt"]),
    ("train bad tokenizer", ["train", *TRAIN, "--tokenizer", "bpe:{F}/binary.json"]),
    ("train unknown flag", ["train", *TRAIN, "--learning-rate", "1"]),
    # train: --set
    ("set without =", ["train", *TRAIN, "--set", "optim.lr"]),
    ("set empty key", ["train", *TRAIN, "--set", "=3"]),
    ("set unknown key", ["train", *TRAIN, "--set", "optim.nope=1"]),
    ("set unknown section", ["train", *TRAIN, "--set", "nope.lr=1"]),
    ("set section as value", ["train", *TRAIN, "--set", "optim=3"]),
    ("set lr word", ["train", *TRAIN, "--set", "optim.lr=fast"]),
    ("set eps -1", ["train", *TRAIN, "--set", "optim.eps=-1"]),
    ("set eps 0", ["train", *TRAIN, "--set", "optim.eps=0"]),
    ("set beta1 1", ["train", *TRAIN, "--set", "optim.beta1=1"]),
    ("set beta2 -0.5", ["train", *TRAIN, "--set", "optim.beta2=-0.5"]),
    ("set min_lr_ratio 2", ["train", *TRAIN, "--set", "optim.min_lr_ratio=2"]),
    ("set warmup_fraction 1", ["train", *TRAIN, "--set", "optim.warmup_fraction=1"]),
    ("set decay_fraction 0", ["train", *TRAIN, "--set", "optim.decay_fraction=0"]),
    ("set warmup_steps -1", ["train", *TRAIN, "--set", "optim.warmup_steps=-1"]),
    ("set schedule", ["train", *TRAIN, "--set", "optim.schedule=linear"]),
    ("set seed 2**70", ["train", *TRAIN, "--set", f"train.seed={2**70}"]),
    ("set seed -1", ["train", *TRAIN, "--set", "train.seed=-1"]),
    ("set seed float", ["train", *TRAIN, "--set", "train.seed=1.5"]),
    ("set steps bool word", ["train", *TRAIN, "--set", "train.steps=yes"]),
    ("set nonfinite_skips -1", ["train", *TRAIN, "--set", "train.nonfinite_skips=-1"]),
    ("set noise_density 1", ["train", *TRAIN, "--set", "objective.noise_density=1"]),
    ("set mean_span 0", ["train", *TRAIN, "--set", "objective.mean_span=0"]),
    ("set split_seed 2**64", ["train", *TRAIN, "--set", f"data.split_seed={2**64}"]),
    ("set val_fraction 0.9", ["train", *TRAIN, "--set", "data.val_fraction=0.9"]),
    ("set parallel", ["train", *TRAIN, "--set", "runtime.parallel=mpi"]),
    ("set model unknown", ["train", *TRAIN, "--set", "model=no-such-model"]),
    ("set model setting unknown", ["train", *TRAIN, "--set", "model.no_such_setting=3"]),
    ("set model setting bad type", ["train", *TRAIN, "--set", "model.d_model=wide"]),
    ("set model setting negative", ["train", *TRAIN, "--set", "model.d_model=-8"]),
    # train: recipes
    ("recipe missing", ["train", "--config", "{F}/missing.toml"]),
    ("recipe yaml", ["train", "--config", "{F}/recipe.yaml"]),
    ("recipe folder", ["train", "--config", "{F}/folder"]),
    ("recipe binary json", ["train", "--config", "{F}/binary.json"]),
    ("recipe binary toml", ["train", "--config", "{F}/binary.toml"]),
    ("recipe deep json", ["train", "--config", "{F}/deep.json"]),
    ("recipe deep toml", ["train", "--config", "{F}/deep.toml"]),
    ("recipe list", ["train", "--config", "{F}/list.json"]),
    ("recipe number", ["train", "--config", "{F}/number.json"]),
    ("recipe bad json", ["train", "--config", "{F}/bad.json"]),
    ("recipe bad toml", ["train", "--config", "{F}/bad.toml"]),
    ("recipe unknown key", ["train", "--config", "{F}/unknown-key.toml"]),
    ("recipe unknown section", ["train", "--config", "{F}/unknown-section.toml"]),
    ("recipe bad type", ["train", "--config", "{F}/bad-type.toml"]),
    ("recipe bad range", ["train", "--config", "{F}/bad-range.toml"]),
    ("recipe eps -1", ["train", "--config", "{F}/bad-eps.toml"]),
    ("recipe seed too big", ["train", "--config", "{F}/big-seed.toml"]),
    ("recipe bool steps", ["train", "--config", "{F}/bool-steps.json"]),
    ("recipe section not a table", ["train", "--config", "{F}/section-not-table.json"]),
    ("recipe [model] without name", ["train", "--config", "{F}/model-no-name.toml"]),
    ("recipe [model] unknown preset", ["train", "--config", "{F}/model-table-bad.json"]),
    # train: --resume
    ("resume missing", ["train", "--resume", "{T}/no-such-run", "--quiet"]),
    ("resume a file", ["train", "--resume", "{F}/afile.txt", "--quiet"]),
    ("resume empty folder", ["train", "--resume", "{F}/empty-dir", "--quiet"]),
    ("resume with --config", ["train", "--resume", "{R}", "--config", "{F}/bad.toml", "--quiet"]),
    ("resume with --out", ["train", "--resume", "{R}", "--out", "{T}/elsewhere", "--quiet"]),
    ("resume changing the model", ["train", "--resume", "{R}", "--model", "pooled-tiny", "--quiet"]),
    ("resume with --set lr", ["train", "--resume", "{R}", "--set", "optim.lr=1", "--quiet"]),
    ("resume stop-at -3", ["train", "--resume", "{R}", "--stop-at", "-3", "--quiet"]),
    ("resume state not json", ["train", "--resume", "{B}/rehashed-state-not-json", "--quiet"]),
    ("resume state deep", ["train", "--resume", "{B}/rehashed-state-deep", "--quiet"]),
    ("resume run config not json", ["train", "--resume", "{B}/run-config-not-json", "--quiet"]),
    # plot
    ("plot missing run", ["plot", "{T}/no-such-run"]),
    ("plot folder without metrics", ["plot", "{T}/no-metrics"]),
    ("plot bad metrics", ["plot", "{T}/bad-metrics"]),
    ("plot --out folder", ["plot", "{R}", "--out", "{F}/folder"]),
    ("plot --out under a file", ["plot", "{R}", "--out", "{F}/afile.txt/curves.png"]),
    # finetune
    ("finetune train file missing", ["finetune", "--train", "{F}/missing.jsonl", "--quiet"]),
    (
        "classify a pretraining run",
        ["classify", "--model", "{R}", "--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"],
    ),
    (
        "classify missing run",
        ["classify", "--model", "{T}/no-such-run", "--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"],
    ),
    (
        "classify input without the field",
        ["classify", "--model", "{R}", "--input", "{F}/no-text.jsonl", "--out", "{T}/l.jsonl"],
    ),
    ("classify binary input", ["classify", "--model", "{R}", "--input", "{F}/binary.jsonl", "--out", "{T}/l.jsonl"]),
    (
        "classify out is the input",
        ["classify", "--model", "{R}", "--input", "{F}/texts.jsonl", "--out", "{F}/texts.jsonl"],
    ),
    ("classify out is the run", ["classify", "--model", "{R}", "--input", "{F}/texts.jsonl", "--out", "{R}"]),
    (
        "classify batch-size 0",
        ["classify", "--model", "{R}", "--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl", "--batch-size", "0"],
    ),
    ("classify without a model", ["classify", "--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"]),
    (
        "classify bag of words without validation",
        ["classify", "--bag-of-words", "{F}/texts.jsonl", "--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"],
    ),
    (
        "classify bag of words from unlabelled rows",
        ["classify", "--bag-of-words", "{F}/texts.jsonl", "--bag-of-words-val", "{F}/texts.jsonl"]
        + ["--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"],
    ),
    (
        "classify bag of words from a binary file",
        ["classify", "--bag-of-words", "{F}/binary.jsonl", "--bag-of-words-val", "{F}/binary.jsonl"]
        + ["--input", "{F}/texts.jsonl", "--out", "{T}/l.jsonl"],
    ),
    # average
    ("average one run", ["average", "{R}", "--out", "{T}/soup"]),
    ("average a run with itself", ["average", "{R}", "{R}", "--out", "{T}/soup"]),
    ("average a missing run", ["average", "{R}", "{T}/no-such-run", "--out", "{T}/soup"]),
    ("average flipped weights", ["average", "{R}", "{B}/flipped-weights", "--out", "{T}/soup"]),
    ("average garbage weights", ["average", "{R}", "{B}/rehashed-garbage-weights", "--out", "{T}/soup"]),
    ("average config not json", ["average", "{R}", "{B}/rehashed-config-not-json", "--out", "{T}/soup"]),
    ("average into the run", ["average", "{R}", "{B}/flipped-weights", "--out", "{R}"]),
    ("average weight 0", ["average", "{R}", "{B}/truncated-weights", "--out", "{T}/soup", "--weights", "1", "0"]),
    ("average weights text", ["average", "{R}", "{R}", "--out", "{T}/soup", "--weights", "one", "two"]),
    ("spin on a pretraining run", ["spin", "{R}", "--out", "{T}/spin-out", "--quiet"]),
    ("spin without a run", ["spin", "--out", "{T}/spin-out", "--quiet"]),
    ("spin resume a pretraining run", ["spin", "--resume", "{R}", "--quiet"]),
    ("spin beta 0", ["spin", "{R}", "--task", "docstring-summary", "--beta", "0", "--out", "{T}/spin-out", "--quiet"]),
    ("selfplay unknown game", ["selfplay", "--game", "chess", "--out", "{T}/sp-out", "--quiet"]),
    ("selfplay games 0", ["selfplay", "--games", "0", "--out", "{T}/sp-out", "--quiet"]),
    ("selfplay resume a pretraining run", ["selfplay", "--resume", "{R}", "--quiet"]),
    ("finetune train file .txt", ["finetune", "--train", "{F}/task.txt", "--quiet"]),
    ("finetune train file FIFO", ["finetune", "--train", "{F}/fifo.jsonl", "--quiet"]),
    ("finetune csv not UTF-8", ["finetune", "--train", "{F}/bad.csv", "--quiet"]),
    ("finetune csv binary", ["finetune", "--train", "{F}/binary.csv", "--quiet"]),
    ("finetune csv field over 128 KiB", ["finetune", "--train", "{F}/huge-field.csv", "--quiet"]),
    ("finetune csv NUL byte", ["finetune", "--train", "{F}/nul.csv", "--quiet"]),
    ("finetune csv missing column", ["finetune", "--train", "{F}/no-column.csv", "--quiet"]),
    ("finetune csv short row", ["finetune", "--train", "{F}/short-row.csv", "--quiet"]),
    ("finetune csv empty target", ["finetune", "--train", "{F}/empty-target.csv", "--quiet"]),
    ("finetune csv header only", ["finetune", "--train", "{F}/header-only.csv", "--quiet"]),
    ("finetune jsonl deep", ["finetune", "--train", "{F}/deep-task.jsonl", "--quiet"]),
    ("finetune jsonl binary", ["finetune", "--train", "{F}/binary.jsonl", "--quiet"]),
    ("finetune jsonl not json", ["finetune", "--train", "{F}/task-not-json.jsonl", "--quiet"]),
    ("finetune jsonl array", ["finetune", "--train", "{F}/task-array.jsonl", "--quiet"]),
    ("finetune jsonl missing field", ["finetune", "--train", "{F}/task-missing.jsonl", "--quiet"]),
    ("finetune jsonl number field", ["finetune", "--train", "{F}/task-number.jsonl", "--quiet"]),
    ("finetune jsonl empty target", ["finetune", "--train", "{F}/task-empty-target.jsonl", "--quiet"]),
    ("finetune labels ,,,", ["finetune", "--task", "docstring-topic", "--labels", ",,,", "--quiet"]),
    ("finetune unknown task", ["finetune", "--task", "no-such-task", "--quiet"]),
    ("finetune task and train", ["finetune", "--task", "docstring-topic", "--train", "{F}/bad.csv", "--quiet"]),
    ("finetune unknown kind", ["finetune", "--train", "{F}/bad.csv", "--kind", "poetry", "--quiet"]),
    ("finetune steps 0", ["finetune", "--steps", "0", "--quiet"]),
    ("finetune val-fraction 0.9", ["finetune", "--val-fraction", "0.9", "--quiet"]),
    ("finetune max-input-bytes 0", ["finetune", "--max-input-bytes", "0", "--quiet"]),
    ("finetune seed 2**70", ["finetune", "--seed", str(2**70), "--quiet"]),
    ("finetune unknown preset", ["finetune", "--model", "no-such-model", "--quiet"]),
    ("finetune init a file", ["finetune", "--model", "{F}/afile.txt", "--quiet"]),
    ("finetune recipe deep", ["finetune", "--config", "{F}/deep.json", "--quiet"]),
    ("finetune recipe unknown task", ["finetune", "--config", "{F}/finetune-bad.toml", "--quiet"]),
    ("finetune recipe labels ,,,", ["finetune", "--config", "{F}/finetune-labels.toml", "--quiet"]),
    ("finetune --set unknown", ["finetune", "--set", "task.nope=1", "--quiet"]),
    ("finetune --out is a file", ["finetune", "--out", "{F}/afile.txt", "--steps", "1", "--quiet"]),
    ("finetune resume missing", ["finetune", "--resume", "{T}/no-such-run", "--quiet"]),
    # evaluate: flags
    ("evaluate max-ids 1", ["evaluate", "{R}", "--max-ids", "1", "--quiet"]),
    ("evaluate max-ids -5", ["evaluate", "{R}", "--max-ids", "-5", "--quiet"]),
    ("evaluate context 0", ["evaluate", "{R}", "--context", "0", "--quiet"]),
    ("evaluate context 1", ["evaluate", "{R}", "--context", "1", "--quiet"]),
    ("evaluate stride 0", ["evaluate", "{R}", "--stride", "0", "--quiet"]),
    ("evaluate stride > context", ["evaluate", "{R}", "--context", "16", "--stride", "32", "--quiet"]),
    ("evaluate batch-size 0", ["evaluate", "{R}", "--batch-size", "0", "--quiet"]),
    ("evaluate limit -1", ["evaluate", "{R}", "--limit", "-1", "--quiet"]),
    ("evaluate limit 2**70", ["evaluate", "{R}", "--limit", str(2**70), "--quiet"]),
    ("evaluate limit on bpb", ["evaluate", "{R}", "--limit", "5", "--quiet"]),
    ("evaluate limit on wikitext2", ["evaluate", "{R}", "--task", "blimp", "--task", "wikitext2", "--limit", "5"]),
    ("evaluate unknown task", ["evaluate", "{R}", "--task", "nope", "--quiet"]),
    ("evaluate unknown split", ["evaluate", "{R}", "--split", "dev", "--quiet"]),
    ("evaluate json and two tasks", ["evaluate", "{R}", "--task", "bpb", "--task", "bpb", "--json", "{T}/r.json"]),
    ("evaluate --json folder", ["evaluate", "{R}", "--json", "{F}/folder", "--quiet"]),
    ("evaluate --out is a file", ["evaluate", "{R}", "--out", "{F}/afile.txt", "--quiet"]),
    ("evaluate --out under a file", ["evaluate", "{R}", "--out", "{F}/afile.txt/evals", "--quiet"]),
    ("evaluate file missing", ["evaluate", "{R}", "--file", "{F}/missing.txt", "--quiet"]),
    ("evaluate file binary", ["evaluate", "{R}", "--file", "{F}/binary.txt", "--quiet"]),
    ("evaluate file empty", ["evaluate", "{R}", "--file", "{F}/empty.txt", "--quiet"]),
    ("evaluate file FIFO", ["evaluate", "{R}", "--file", "{F}/fifo", "--quiet"]),
    ("evaluate unknown corpus", ["evaluate", "{R}", "--data", "no-such-corpus", "--quiet"]),
    ("evaluate mc missing", ["evaluate", "{R}", "--task", "mc:{F}/missing.jsonl", "--quiet"]),
    ("evaluate mc deep", ["evaluate", "{R}", "--task", "mc:{F}/deep-mc.jsonl", "--quiet"]),
    ("evaluate mc binary", ["evaluate", "{R}", "--task", "mc:{F}/binary.jsonl", "--quiet"]),
    ("evaluate mc not json", ["evaluate", "{R}", "--task", "mc:{F}/mc-not-json.jsonl", "--quiet"]),
    ("evaluate mc missing fields", ["evaluate", "{R}", "--task", "mc:{F}/mc-bad.jsonl", "--quiet"]),
    ("evaluate mc label out of range", ["evaluate", "{R}", "--task", "mc:{F}/mc-label.jsonl", "--quiet"]),
    ("evaluate blimp without data", ["evaluate", "{R}", "--task", "blimp", "--data-dir", "{F}/empty-dir"]),
    # evaluate / generate / hf-export: checkpoints
    ("evaluate missing run", ["evaluate", "{T}/no-such-run", "--quiet"]),
    ("evaluate a file", ["evaluate", "{F}/afile.txt", "--quiet"]),
    ("evaluate empty folder", ["evaluate", "{F}/empty-dir", "--quiet"]),
    ("evaluate truncated weights", ["evaluate", "{B}/truncated-weights", "--quiet"]),
    ("evaluate flipped weights", ["evaluate", "{B}/flipped-weights", "--quiet"]),
    ("evaluate garbage weights", ["evaluate", "{B}/rehashed-garbage-weights", "--quiet"]),
    ("evaluate short weights", ["evaluate", "{B}/rehashed-short-weights", "--quiet"]),
    ("evaluate no weights", ["evaluate", "{B}/no-weights", "--quiet"]),
    ("evaluate config not json", ["evaluate", "{B}/config-not-json", "--quiet"]),
    ("evaluate rehashed config not json", ["evaluate", "{B}/rehashed-config-not-json", "--quiet"]),
    ("evaluate config deep", ["evaluate", "{B}/rehashed-config-deep", "--quiet"]),
    ("evaluate config binary", ["evaluate", "{B}/rehashed-config-binary", "--quiet"]),
    ("evaluate config list", ["evaluate", "{B}/rehashed-config-list", "--quiet"]),
    ("evaluate config empty", ["evaluate", "{B}/rehashed-config-empty", "--quiet"]),
    ("evaluate manifest not json", ["evaluate", "{B}/manifest-not-json", "--quiet"]),
    ("evaluate manifest binary", ["evaluate", "{B}/manifest-binary", "--quiet"]),
    ("evaluate manifest deep", ["evaluate", "{B}/manifest-deep", "--quiet"]),
    ("evaluate no checkpoints", ["evaluate", "{B}/no-checkpoints", "--quiet"]),
    ("generate missing run", ["generate", "{T}/no-such-run"]),
    ("generate truncated weights", ["generate", "{B}/truncated-weights"]),
    ("generate flipped weights", ["generate", "{B}/flipped-weights"]),
    ("generate garbage weights", ["generate", "{B}/rehashed-garbage-weights"]),
    ("generate config deep", ["generate", "{B}/rehashed-config-deep"]),
    ("generate config binary", ["generate", "{B}/rehashed-config-binary"]),
    ("generate config list", ["generate", "{B}/rehashed-config-list"]),
    ("generate manifest deep", ["generate", "{B}/manifest-deep"]),
    ("generate no checkpoints", ["generate", "{B}/no-checkpoints"]),
    # generate: flags
    ("generate top-p 2", ["generate", "{R}", "--top-p", "2"]),
    ("generate top-p 0", ["generate", "{R}", "--top-p", "0"]),
    ("generate top-p -1", ["generate", "{R}", "--top-p", "-1"]),
    ("generate top-p nan", ["generate", "{R}", "--top-p", "nan"]),
    ("generate temperature -1", ["generate", "{R}", "--temperature", "-1"]),
    ("generate temperature inf", ["generate", "{R}", "--temperature", "inf"]),
    ("generate temperature nan", ["generate", "{R}", "--temperature", "nan"]),
    ("generate top-k 0", ["generate", "{R}", "--top-k", "0"]),
    ("generate top-k -1", ["generate", "{R}", "--top-k", "-1"]),
    ("generate max-new-tokens 0", ["generate", "{R}", "--max-new-tokens", "0"]),
    ("generate max-new-bytes -1", ["generate", "{R}", "--max-new-bytes", "-1"]),
    ("generate num-beams 0", ["generate", "{R}", "--num-beams", "0"]),
    ("generate seed -1", ["generate", "{R}", "--seed", "-1"]),
    ("generate seed 2**70", ["generate", "{R}", "--seed", str(2**70)]),
    ("generate threads -1", ["generate", "{R}", "--threads", "-1"]),
    ("generate lone surrogate prompt", ["generate", "{R}", "--prompt", "a\ud800b", "--max-new-tokens", "2"]),
    # hf-import / hf-export
    ("hf-import missing", ["hf-import", "{T}/no-such-dir", "--out", "{T}/imported"]),
    ("hf-import a file", ["hf-import", "{F}/afile.txt", "--out", "{T}/imported"]),
    ("hf-import empty folder", ["hf-import", "{F}/empty-dir", "--out", "{T}/imported"]),
    ("hf-import config not json", ["hf-import", "{T}/hf-bad", "--out", "{T}/imported"]),
    ("hf-import config deep", ["hf-import", "{T}/hf-deep", "--out", "{T}/imported"]),
    ("hf-import config binary", ["hf-import", "{T}/hf-binary", "--out", "{T}/imported"]),
    ("hf-import config list", ["hf-import", "{T}/hf-list", "--out", "{T}/imported"]),
    ("hf-import no weights", ["hf-import", "{T}/hf-noweights", "--out", "{T}/imported"]),
    ("hf-import no --out", ["hf-import", "{T}/hf-bad"]),
    ("hf-export a decoder", ["hf-export", "{R}", "--out", "{T}/exported"]),
    ("hf-export missing", ["hf-export", "{T}/no-such-run", "--out", "{T}/exported"]),
    ("hf-export corrupt", ["hf-export", "{B}/truncated-weights", "--out", "{T}/exported"]),
    # export
    ("export unknown format", ["export", "{R}", "--format", "tflite", "--out", "{T}/exported"]),
    ("export no --format", ["export", "{R}", "--out", "{T}/exported"]),
    ("export no --out", ["export", "{R}", "--format", "onnx"]),
    ("export ct2 bad dtype", ["export", "{R}", "--format", "ct2", "--dtype", "q8_0", "--out", "{T}/exported"]),
    ("export bad dtype", ["export", "{R}", "--format", "gguf", "--dtype", "int4", "--out", "{T}/exported"]),
    ("export into the run", ["export", "{R}", "--format", "onnx", "--out", "{R}/exported"]),
    ("export into a checkpoint", ["export", "{R}", "--format", "onnx", "--out", "{R}/checkpoints/x"]),
    ("export over a folder", ["export", "{R}", "--format", "onnx", "--out", "{F}"]),
    ("export missing", ["export", "{T}/no-such-run", "--format", "hf", "--out", "{T}/exported"]),
    ("export corrupt", ["export", "{B}/truncated-weights", "--format", "hf", "--out", "{T}/exported"]),
    ("export config deep", ["export", "{B}/rehashed-config-deep", "--format", "hf", "--out", "{T}/exported"]),
    # serve: each fails before anything is served (a free port, then the run is refused)
    ("serve missing", ["serve", "{T}/no-such-run", "--port", "0"]),
    ("serve corrupt", ["serve", "{B}/truncated-weights", "--port", "0"]),
    ("serve no checkpoints", ["serve", "{B}/no-checkpoints", "--port", "0"]),
    ("serve port 70000", ["serve", "{R}", "--port", "70000"]),
    ("serve port -1", ["serve", "{R}", "--port", "-1"]),
    ("serve max-batch 0", ["serve", "{R}", "--max-batch", "0"]),
    ("serve max-tokens-limit 0", ["serve", "{R}", "--max-tokens-limit", "0"]),
    ("serve threads -1", ["serve", "{R}", "--threads", "-1", "--port", "0"]),
    # demo
    ("demo steps 0", ["demo", "--steps", "0", "--out", "{T}/demo"]),
    ("demo steps -1", ["demo", "--steps", "-1", "--out", "{T}/demo"]),
    ("demo unknown model", ["demo", "--model", "no-such-model", "--out", "{T}/demo"]),
    ("demo data missing", ["demo", "--data", "{F}/missing.txt", "--out", "{T}/demo"]),
    ("demo data FIFO", ["demo", "--data", "{F}/fifo", "--out", "{T}/demo", "--cache-dir", "{T}/cache"]),
    ("demo bad tokenizer", ["demo", "--tokenizer", "bpe:{F}/binary.json", "--out", "{T}/demo"]),
    ("demo threads -1", ["demo", "--threads", "-1", "--out", "{T}/demo"]),
]
# Run as the console script would be (a fresh interpreter): the same promise outside pytest's process.
SUBPROCESS = {"train stop-at -3", "generate seed -1", "recipe deep json", "prepare FIFO"}


def fill(argv: list[str], places: dict[str, Path]) -> list[str]:
    out = []
    for arg in argv:
        for key, path in places.items():
            arg = arg.replace("{" + key + "}", str(path))
        out.append(arg)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime_ns, inode) of every file under root, but the cache stlm keeps there and the run
    folders' writer locks (a writer records its pid there before it reads the run): any rewrite shows."""
    return {
        str(p.relative_to(root)): (s.st_size, s.st_mtime_ns, s.st_ino)
        for p in root.rglob("*")
        if not p.is_symlink()
        and p.is_file()
        and p.parts[len(root.parts)] != "cache"
        and p.name != LOCK_FILE
        and (s := p.stat())
    }


def digest(root: Path, names) -> dict[str, str]:
    return {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest() if (root / name).is_file() else "gone"
        for name in names
    }


@contextlib.contextmanager
def process_state_kept():
    """What a command may change in its process and the next case would inherit, put back after it:
    environment, working folder, torch's thread count, the root logger's handlers and level."""
    import logging

    import torch

    env, cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        torch.set_num_threads(threads)
        root.handlers[:] = handlers
        root.setLevel(level)


def run_in_process(argv: list[str]) -> tuple[object, str, str | None]:
    """(exit code, stderr, traceback text if an exception escaped main)."""
    err, out = io.StringIO(), io.StringIO()
    with process_state_kept(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code: object = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            return "exception", err.getvalue(), traceback.format_exc()
    return code, err.getvalue(), None


def start_subprocess(argv: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m stlm ARGV` started (as the console script runs it): finish it with `finish_subprocess`."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "stlm", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )


def finish_subprocess(proc: subprocess.Popen) -> tuple[object, str, str | None]:
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err, None


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(p for p in before if before[p] != after.get(p))


def test_table_has_at_least_150_inputs_across_every_subcommand():
    from stlm.cli.main import COMMANDS

    assert len(CASES) >= 150 and len({name for name, _ in CASES}) == len(CASES)
    used = {argv[0] for _, argv in CASES if argv}
    assert {command.names[0] for command in COMMANDS} <= used


def test_every_bad_input_is_one_line_exit_2_and_changes_no_file(tmp_path, tiny_run, corpus_dir, one_thread):
    write_files(tmp_path, corpus_dir)
    corrupt_runs(tmp_path, tiny_run)
    shutil.copytree(tiny_run, tmp_path / "run")
    places = {"F": tmp_path / "files", "R": tmp_path / "run", "B": tmp_path / "bad-runs", "C": tmp_path / "corpus"}
    places["T"] = tmp_path
    before_all = snapshot(tmp_path)
    bytes_before = digest(tmp_path, before_all)
    counts = {"inputs tried": 0, "tracebacks": 0, "silent accepts": 0, "files changed": 0, "not one line": 0}
    failures = []
    # The console-script cases run side by side first (each is mostly a fresh interpreter importing
    # torch); a file any of them changed is charged to each of them. Each also runs in-process below:
    # the same exit code and stderr show that the in-process path is the console script's.
    after = before_all
    started = {name: start_subprocess(fill(t, places), tmp_path) for name, t in CASES if name in SUBPROCESS}
    ran_apart = {name: finish_subprocess(proc) for name, proc in started.items()}
    before, after = after, snapshot(tmp_path)
    changed_apart = changed_files(before, after)
    for name, template in CASES:
        argv = fill(template, places)
        before = after  # nothing runs between one case's last look and the next case
        code, err, trace = run_in_process(argv)
        after = snapshot(tmp_path)
        changed = changed_files(before, after)
        problems = []
        if name in ran_apart:
            if ran_apart[name] != (code, err, trace):
                problems.append(f"in-process {(code, err)!r} differs from the console script's {ran_apart[name][:2]!r}")
            (code, err, trace), changed = ran_apart[name], sorted({*changed, *changed_apart})
        counts["inputs tried"] += 1
        lines = err.strip().splitlines()
        if trace is not None or "Traceback" in err:
            counts["tracebacks"] += 1
            problems.append("traceback: " + (trace or err).strip().splitlines()[-1])
        elif code == 0:
            counts["silent accepts"] += 1
            problems.append("exit 0")
        elif code != 2:
            problems.append(f"exit {code}")
        if trace is None and (len(lines) != 1 or not lines[0].startswith("stlm") or ": error: " not in lines[0]):
            counts["not one line"] += 1
            problems.append(f"stderr has {len(lines)} lines: {err.strip()[-300:]!r}")
        if changed:
            counts["files changed"] += 1
            problems.append(f"changed {changed[:3]}")
        if problems:
            failures.append(f"{name} ({' '.join(argv)}): {'; '.join(problems)}")
    changed_bytes = sorted(n for n, h in digest(tmp_path, before_all).items() if h != bytes_before[n])
    counts["files changed"] += len(changed_bytes)
    print("\nCLI fuzz:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    if os.environ.get("STLM_FUZZ_REPORT"):
        Path(os.environ["STLM_FUZZ_REPORT"]).write_text(json.dumps(counts, indent=2), encoding="utf-8")
    assert not failures and not changed_bytes, f"{counts}\n" + "\n".join(failures + changed_bytes)
    assert counts["inputs tried"] == len(CASES) >= 150
