"""Flags derived from the typed configs, --help with defaults, the README's flags, resume rules, new options."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import stlm
from stlm.cli.flags import field_comments, overrides, show
from stlm.cli.main import build_parser, main
from stlm.config import RunConfig
from stlm.finetune.config import FinetuneConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def option_entries(text: str) -> dict[str, str]:
    """Each option's help entry in --help output, by its first flag."""
    entries, current = {}, None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def leaves(config, prefix=""):
    """(dotted key, default) of every plain setting of a config instance."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        elif not isinstance(value, (dict, list)):  # tables are reached through --set
            yield prefix + f.name, value


def test_every_flag_of_every_command_shows_its_default(capsys):
    for name in subparsers():
        entries = option_entries(help_text(capsys, name))
        entries.pop("-h")
        for flag, entry in entries.items():
            assert "default: " in " ".join(entry.split()), f"stlm {name} {flag}: {entry}"


def test_train_and_finetune_have_a_flag_for_every_setting_with_its_default_and_comment(capsys):
    for command, config in (("train", RunConfig()), ("finetune", FinetuneConfig())):
        text = " ".join(help_text(capsys, command).split())
        for key, default in leaves(config):
            assert f"({key}; default: {show(default)})" in text, (command, key)
    comment = field_comments(type(RunConfig().data))["seq_len"]
    assert comment.startswith("tokens per training window") and comment in " ".join(help_text(capsys, "train").split())


def test_every_flag_says_what_it_does_not_only_its_key_and_default():
    for name, sub in subparsers().items():
        for action in sub._actions:
            what = re.sub(r"\(?[\w.]*;? ?default: [^)]*\)?", "", action.help or "").strip()
            assert what, f"stlm {name} {action.option_strings or action.dest}: no help beyond its default"


def test_pretrain_usage_line_and_version(capsys):
    assert help_text(capsys, "pretrain").startswith("usage: stlm pretrain")
    assert help_text(capsys, "train").startswith("usage: stlm train")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"stlm {stlm.__version__}"


def test_usage_errors_exit_2(capsys):
    for argv in (["train", "--steps", "many"], ["train", "--optimizer", "sgd"], ["generate"], ["nope"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err


def readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of every `stlm ...` line in the README's usage block."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Usage") :]
    block = block[block.index("```bash") : block.index("```", block.index("```bash") + 3)]
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        match = re.search(r"(?:^|-m |\s)stlm ([a-z][-a-z]*)(.*)", line.split("#")[0])
        if match:
            found.append((match.group(1), re.findall(r"(?<![\w-])(--[a-z][-a-z0-9]*)", match.group(2))))
    return found


def test_every_flag_the_readme_shows_is_accepted():
    parsers = subparsers()
    commands = readme_commands()
    assert {name for name, _ in commands} >= {
        "train",
        "pretrain",
        "evaluate",
        "generate",
        "finetune",
        "demo",
        "prepare",
    }
    for name, used in commands:
        known = {s for action in parsers[name]._actions for s in action.option_strings}
        assert set(used) <= known, (name, sorted(set(used) - known))


def test_readme_spellings_map_to_their_settings():
    parse = build_parser().parse_args
    args = parse(
        [
            "train",
            "--warmup",
            "7",
            "--data",
            "x",
            "--objective",
            "span-corruption",
            "--optimizer",
            "adafactor",
            "--compile",
            "--set",
            "model.d_model=128",
            "--set",
            "model.boundary=entropy",
        ]
    )
    assert overrides(args, args.settings) == {
        "data.source": "x",
        "objective.name": "span-corruption",
        "optim.name": "adafactor",
        "optim.warmup_steps": 7,
        "runtime.compile": True,
        "model.d_model": "128",
        "model.boundary": "entropy",  # --set keys pass through unchanged
    }
    args = parse(
        [
            "finetune",
            "--model",
            "runs/x",
            "--train",
            "a.jsonl",
            "--val",
            "b.jsonl",
            "--test",
            "c.jsonl",
            "--warmup-steps",
            "3",
        ]
    )
    assert overrides(args, args.settings) == {
        "init": "runs/x",
        "task.train_file": "a.jsonl",
        "task.val_file": "b.jsonl",
        "task.test_file": "c.jsonl",
        "optim.warmup_steps": 3,
    }
    assert overrides(parse(["train"]), parse(["train"]).settings) == {}  # flags not given leave the recipe alone


def test_threads_and_device_on_generate_evaluate_and_demo(tiny_run, capsys):
    parse = build_parser().parse_args
    for argv in (["generate", "RUN"], ["evaluate", "RUN"], ["demo"]):
        args = parse([*argv, "--threads", "1", "--device", "cpu"])
        assert (getattr(args, "runtime.threads"), getattr(args, "runtime.device")) == (1, "cpu")
    before = torch.get_num_threads()
    try:
        assert main(["generate", str(tiny_run), "--max-new-bytes", "3", "--threads", "1", "--device", "cpu"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()


def test_generate_flag_defaults_are_the_api_defaults():
    signature = inspect.signature(stlm.Model.generate)
    args = build_parser().parse_args(["generate", "RUN"])
    assert args.max_new_tokens == stlm.api.DEFAULT_MAX_NEW_TOKENS
    assert args.num_beams == signature.parameters["num_beams"].default
    assert args.temperature is None and signature.parameters["temperature"].default is None
    help_ = {a.dest: a.help for a in subparsers()["generate"]._actions}
    assert f"default: {stlm.api.DEFAULT_TEMPERATURE}" in help_["temperature"]


def test_num_beams_needs_an_encoder_decoder(tiny_run, capsys):
    assert main(["generate", str(tiny_run), "--num-beams", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "encoder-decoders" in err and len(err.strip().splitlines()) == 1


def test_models_resolves_any_name_with_its_exact_count_and_shape(capsys):
    from stlm import registry

    for name in ("t5-efficient-small-el16", "decoder-tiny"):
        family, cfg = registry.resolve_model(name)
        assert main(["models", name]) == 0
        out = capsys.readouterr().out
        assert name in out and f"{family.count_params(cfg):,}" in out and family.describe(cfg) in out
    assert main(["models", "t5-efficient-small-el0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--lr", "1e-3"], "--lr"),
        (["train", "--model", "decoder-small"], "--model"),
        (["train", "--warmup", "5"], "--warmup"),
        (["train", "--set", "optim.weight_decay=0"], "--set optim.weight_decay"),
        (["train", "--out", "elsewhere"], "--out"),
        (["train", "--config", "recipe.toml"], "--config"),
        (["finetune", "--task", "docstring-summary"], "--task"),
        (["finetune", "--model", "decoder-small"], "--model"),
        (["finetune", "--lr", "1e-3"], "--lr"),
    ],
)
def test_resume_refuses_flags_that_would_change_the_run(capsys, tmp_path, argv, flag):
    command = argv[0]
    assert main([command, "--resume", str(tmp_path / "run"), *argv[1:], "--threads", "1", "--steps", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stlm {command}: error: {flag} cannot be used with --resume"), err
    assert len(err.strip().splitlines()) == 1 and "--steps" in err and "--threads" in err


def test_resume_takes_more_steps_threads_and_device(capsys, tmp_path, tiny_run, corpus_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code = main(
        [
            "train",
            "--resume",
            str(run),
            "--data",
            str(corpus_dir),
            "--steps",
            "10",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--set",
            "train.log_every=1",
            "--quiet",
        ]
    )
    assert code == 0 and "step 10" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 10 and {9, 10} <= set(steps)  # logged every step after the resume
