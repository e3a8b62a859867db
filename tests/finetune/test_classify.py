"""`stlm classify`: label posteriors of fine-tuned classification runs, alone and averaged."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from stlm.cli.main import main
from stlm.config import OptimConfig, RuntimeConfig
from stlm.finetune import classify, format
from stlm.finetune.bow import fit_temperature
from stlm.finetune.config import FinetuneConfig, FinetuneTrainConfig, TaskConfig
from stlm.finetune.examples import Example, load_examples, write_jsonl
from stlm.finetune.loop import TaskData, finetune, load_task_data

CPU = ["--device", "cpu", "--precision", "fp32", "--threads", "1", "--quiet"]


def _run(
    out: Path,
    train_file: Path,
    *,
    seed: int = 0,
    labels: str = "",
    direction: str = "direct",
    init: str = "decoder-tiny",
) -> Path:
    task = TaskConfig(
        train_file=str(train_file),
        kind="classification",
        input_field="text",
        target_field="label",
        labels=labels,
        direction=direction,
    )
    cfg = FinetuneConfig(
        init=init,
        task=task,
        optim=OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0),
        train=FinetuneTrainConfig(steps=4, batch_size=8, eval_every=4, eval_examples=0, log_every=2, seed=seed),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )
    finetune(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, colours, one_thread) -> dict[str, Path]:
    """Two direct runs on the colours (labels in two orders) and a channel run."""
    root = tmp_path_factory.mktemp("classify-runs")
    return {
        "a": _run(root / "a", colours),
        "b": _run(root / "b", colours, seed=1, labels="red,blue"),
        "channel": _run(root / "channel", colours, direction="channel"),
    }


def _scored_rows(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["predictions"]


def _write_inputs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _classify(capsys, *argv) -> tuple[int, str, str]:
    code = main(["classify", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _log_softmax(scores: dict[str, float]) -> dict[str, float]:
    z = math.log(math.fsum(math.exp(v) for v in scores.values()))
    return {label: v - z for label, v in scores.items()}


def test_one_model_is_the_runs_own_posterior_and_rows_carry_their_fields(runs, tmp_path, capsys):
    scored = _scored_rows(runs["a"])
    source = _write_inputs(tmp_path / "in.jsonl", [{"input": r["input"], "id": r["index"]} for r in scored])
    code, out, err = _classify(capsys, "--model", runs["a"], "--input", source, "--out", tmp_path / "out.jsonl", *CPU)
    assert code == 0, err
    rows = _read(tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == [r["index"] for r in scored]  # extra fields carried, in order
    for row, ref in zip(rows, scored):
        assert row["input"] == ref["input"] and list(row["probs"]) == ["blue", "red"]
        assert math.fsum(row["probs"].values()) == pytest.approx(1.0, abs=1e-9)
        assert all(0.0 <= p <= 1.0 for p in row["probs"].values())
        assert row["label"] == ref["prediction_logprob"] == max(row["probs"], key=row["probs"].get)
        expected = _log_softmax(ref["label_scores"])
        for label, p in row["probs"].items():
            assert math.log(p) == pytest.approx(expected[label], abs=1e-5)
    assert f"labelled {len(rows)} rows with 1 model(s): blue " in out
    counts = {label: sum(r["label"] == label for r in rows) for label in ("blue", "red")}
    assert f"blue {counts['blue']}, red {counts['red']}" in out


def test_two_models_average_their_log_posteriors_and_renormalise(runs, tmp_path, capsys):
    texts = [r["input"] for r in _scored_rows(runs["a"])]
    a = classify.load_classifier(runs["a"], device="cpu", precision="fp32")
    b = classify.load_classifier(runs["b"], device="cpu", precision="fp32")
    assert a.labels == ["blue", "red"] and b.labels == ["red", "blue"]
    post_a, post_b = classify.label_log_posteriors(a, texts), classify.label_log_posteriors(b, texts)
    labels, probs = classify.classify_texts([a, b], texts)
    assert labels == ["blue", "red"]  # the first model's order
    for pa, pb, got in zip(post_a, post_b, probs):
        mean = {"blue": (pa[0] + pb[1]) / 2, "red": (pa[1] + pb[0]) / 2}
        expected = _log_softmax(mean)
        assert [math.log(p) for p in got] == pytest.approx([expected["blue"], expected["red"]], abs=1e-9)
    # The same through the command line, one row a text.
    source = _write_inputs(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    argv = ["--model", runs["a"], "--model", runs["b"], "--input", source, "--out", tmp_path / "o.jsonl"]
    code, out, err = _classify(capsys, *argv, "--field", "text", *CPU)
    assert code == 0, err
    assert "with 2 model(s)" in out
    rows = _read(tmp_path / "o.jsonl")
    got = [p for r in rows for p in (r["probs"]["blue"], r["probs"]["red"])]
    assert got == pytest.approx([p for row in probs for p in row], abs=1e-6)


def _with_its_data(run: Path, copy: Path) -> tuple[Path, TaskData]:
    """A copy of a run fine-tuned on its own files, with those examples in its data/ folder."""
    cfg = FinetuneConfig.from_dict(json.loads((run / "config.json").read_text())["finetune"])
    data = load_task_data(cfg, run)
    shutil.copytree(run, copy)
    (copy / "data").mkdir()
    write_jsonl(copy / "data" / "train.jsonl", data.train)
    write_jsonl(copy / "data" / "val.jsonl", data.val)
    return copy, data


def test_channel_run_needs_its_training_examples_for_the_prior(runs, tmp_path, capsys):
    run = runs["channel"]
    scored = _scored_rows(run)
    source = _write_inputs(tmp_path / "in.jsonl", [{"input": r["input"]} for r in scored])
    out = tmp_path / "out.jsonl"
    code, _, err = _classify(capsys, "--model", run, "--input", source, "--out", out, *CPU)
    assert code == 2 and "records no label prior" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    # With the run's own examples in its data/ (as a built-in task's run has them), the prior is counted again.
    copy, data = _with_its_data(run, tmp_path / "channel")
    code, _, err = _classify(capsys, "--model", copy, "--input", source, "--out", out, *CPU)
    assert code == 0, err
    for row, ref in zip(_read(out), scored):
        assert row["label"] == ref["prediction_logprob"]
        expected = _log_softmax(ref["label_scores"])
        assert {k: math.log(v) for k, v in row["probs"].items()} == pytest.approx(expected, abs=1e-5)
    # Other examples than the run's are refused.
    write_jsonl(copy / "data" / "train.jsonl", data.train[1:])
    code, _, err = _classify(capsys, "--model", copy, "--input", source, "--out", out, *CPU)
    assert code == 2 and "holds other examples than the ones" in err


def test_mistakes_are_one_line_exit_2_and_write_nothing(runs, tmp_path, capsys, tiny_run, one_thread):
    good = _write_inputs(tmp_path / "in.jsonl", [{"input": "sky sea"}, {"input": "fire"}])
    out = tmp_path / "out.jsonl"

    def refused(*argv, says: str) -> None:
        code, _, err = _classify(capsys, *argv, *CPU)
        assert code == 2 and says in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()

    no_field = _write_inputs(tmp_path / "nofield.jsonl", [{"input": "sky"}, {"text": "fire"}])
    refused("--model", runs["a"], "--input", no_field, "--out", out, says=f"{no_field}:2: missing field(s) 'input'")
    number = _write_inputs(tmp_path / "number.jsonl", [{"input": 3}])
    refused("--model", runs["a"], "--input", number, "--out", out, says=f"{number}:1: field 'input' must be a string")
    refused("--model", runs["a"], "--input", good, "--out", good, says="is the --input file")
    refused("--model", runs["a"], "--input", good, "--out", runs["a"], says="is the folder this command reads from")
    refused("--model", runs["a"], "--input", good, "--out", runs["a"] / "results.json", says="the run's own")
    refused("--model", tiny_run, "--input", good, "--out", out, says="is not a fine-tuned run")
    refused("--model", tmp_path / "nowhere", "--input", good, "--out", out, says="does not exist")
    # A run with other labels cannot be averaged with the colours runs.
    weather = _write_inputs(
        tmp_path / "weather.jsonl", [{"text": f"day {i}", "label": "warm" if i % 2 else "cold"} for i in range(40)]
    )
    other = _run(tmp_path / "weather", weather)
    refused("--model", runs["a"], "--model", other, "--input", good, "--out", out, says="(cold, warm)")
    code, _, err = _classify(capsys, "--model", runs["a"], "--model", other, "--input", good, "--out", out, *CPU)
    assert "(blue, red)" in err and "must share one label set" in err


def test_output_is_a_soft_label_training_file(runs, tmp_path, capsys):
    """Each row's "probs" is a distribution over the run's labels and "label" is one of them: what
    `stlm finetune --train FILE --target-field label` reads, hard or soft."""
    source = _write_inputs(tmp_path / "in.jsonl", [{"input": "apple sky"}, {"input": "ice sea", "label": "gold"}])
    code, _, err = _classify(capsys, "--model", runs["a"], "--input", source, "--out", tmp_path / "o.jsonl", *CPU)
    assert code == 0 and "1 input rows had" in err  # a "label" already there is replaced, and said so
    for row in _read(tmp_path / "o.jsonl"):
        assert set(row["probs"]) == {"blue", "red"} and row["label"] in ("blue", "red")
        assert torch.isclose(torch.tensor(sum(row["probs"].values()), dtype=torch.float64), torch.tensor(1.0).double())
    # Read back as fine-tuning reads a training file: soft rows, the label their path.
    soft = load_examples(tmp_path / "o.jsonl", input_field="input", target_field="label", probs_field="probs")
    assert [(ex.target, dict(ex.probs)) for ex in soft] == [
        (row["label"], pytest.approx(row["probs"])) for row in _read(tmp_path / "o.jsonl")
    ]


@pytest.mark.parametrize("which", ["a", "channel"])
def test_windows_read_a_long_text_whole_and_average_its_windows(runs, tmp_path, capsys, which):
    run = runs["a"] if which == "a" else _with_its_data(runs[which], tmp_path / "channel")[0]
    c = classify.load_classifier(run, device="cpu", precision="fp32")
    assert c.input_bytes == 256  # the default max_input_bytes, whichever side the input is on
    short = "apple fire sky"
    long = " ".join(["ice sea sky"] * 20 + ["fire cherry apple é"] * 30)  # 869 bytes: four windows
    pieces = format.utf8_windows(long, 256)
    assert len(pieces) == 4 and "".join(pieces) == long
    plain = classify.label_log_posteriors(c, [short, long, *pieces])
    windowed = classify.label_log_posteriors(c, [short, long], windows=True)
    assert windowed[0] == pytest.approx(plain[0], abs=1e-12)  # a text that fits is read as before
    mean = torch.tensor(plain[2:], dtype=torch.float64).mean(dim=0).log_softmax(dim=-1)
    assert windowed[1] == pytest.approx(mean.tolist(), abs=1e-9)
    assert plain[1] == pytest.approx(plain[2], abs=1e-9)  # without windows: the first window only
    # The command line: --windows gives the same posteriors, and says how long texts were read.
    source = _write_inputs(tmp_path / "in.jsonl", [{"input": short}, {"input": long}])
    for flag, said in (["--windows"], "1 longer texts read in windows of 256 bytes"), ([], "cut to 256 bytes"):
        loud = [a for a in CPU if a != "--quiet"]  # the note is printed unless --quiet
        code, _, err = _classify(capsys, "--model", run, "--input", source, "--out", tmp_path / "o.jsonl", *flag, *loud)
        assert code == 0 and said in err, err
        got = [math.log(_read(tmp_path / "o.jsonl")[1]["probs"][label]) for label in c.labels]
        assert got == pytest.approx(windowed[1] if flag else plain[1], abs=1e-6)


def _colour_files(colours: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The colours examples as input/target files: the first 30 to fit naive Bayes, the rest to choose."""
    rows = [json.loads(line) for line in colours.read_text(encoding="utf-8").splitlines()]
    rows = [{"input": r["text"], "target": r["label"]} for r in rows]
    return _write_inputs(tmp_path / "bow-train.jsonl", rows[:30]), _write_inputs(tmp_path / "bow-val.jsonl", rows[30:])


def test_bag_of_words_is_averaged_in_as_one_more_member(runs, colours, tmp_path, capsys):
    train, val = _colour_files(colours, tmp_path)
    texts = ["sky sea", "fire apple cherry 7", "ice", "nothing here"]
    source = _write_inputs(tmp_path / "in.jsonl", [{"input": t} for t in texts])
    bow = classify.fit_bag_of_words_member(train, val)
    examples = [Example(**json.loads(line)) for line in val.read_text().splitlines()]
    assert bow.labels == ["blue", "red"] and bow.temperature == fit_temperature(bow.model, examples)
    alone = [bow.model.log_posteriors(t, bow.temperature) for t in texts]
    # Bag of words alone: its own tempered posterior.
    code, out, err = _classify(capsys, "--bag-of-words", train, "--bag-of-words-val", val, "--input", source,
                               "--out", tmp_path / "bow.jsonl", *CPU[:-1])  # fmt: skip
    assert code == 0, err
    assert f"and bag of words (temperature {bow.temperature:g})" in err
    for row, post in zip(_read(tmp_path / "bow.jsonl"), alone):
        assert [math.log(row["probs"][label]) for label in bow.labels] == pytest.approx(post, abs=1e-9)
    # With a run: the geometric mean of the run's posterior and bag of words'.
    run = classify.load_classifier(runs["b"], device="cpu", precision="fp32")  # labels red, blue
    model_posts = classify.label_log_posteriors(run, texts)
    code, _, err = _classify(capsys, "--model", runs["b"], "--bag-of-words", train, "--bag-of-words-val", val,
                             "--input", source, "--out", tmp_path / "both.jsonl", *CPU)  # fmt: skip
    assert code == 0, err
    for row, m, b in zip(_read(tmp_path / "both.jsonl"), model_posts, alone):
        expected = _log_softmax({"red": (m[0] + b[1]) / 2, "blue": (m[1] + b[0]) / 2})
        assert list(row["probs"]) == ["red", "blue"]  # the run's order
        assert {k: math.log(v) for k, v in row["probs"].items()} == pytest.approx(expected, abs=1e-5)
    # Weighted: bag of words 0.75, the two runs 0.125 each.
    run_a = classify.load_classifier(runs["a"], device="cpu", precision="fp32")  # labels blue, red
    a_posts = classify.label_log_posteriors(run_a, texts)
    code, _, err = _classify(capsys, "--model", runs["a"], "--model", runs["b"], "--bag-of-words", train,
                             "--bag-of-words-val", val, "--bag-of-words-weight", "0.75", "--input", source,
                             "--out", tmp_path / "weighted.jsonl", *CPU[:-1])  # fmt: skip
    assert code == 0, err
    assert f"2 model(s) and bag of words (temperature {bow.temperature:g}, weight 0.75)" in err
    for row, a, m, b in zip(_read(tmp_path / "weighted.jsonl"), a_posts, model_posts, alone):
        blue = 0.125 * a[0] + 0.125 * m[1] + 0.75 * b[0]
        red = 0.125 * a[1] + 0.125 * m[0] + 0.75 * b[1]
        expected = _log_softmax({"blue": blue, "red": red})
        assert {k: math.log(v) for k, v in row["probs"].items()} == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="summing to 1"):
        classify.classify_texts([run_a, bow], texts, weights=[0.5, 0.6])


def test_bag_of_words_mistakes_are_one_line_exit_2(runs, colours, tmp_path, capsys):
    train, val = _colour_files(colours, tmp_path)
    good = _write_inputs(tmp_path / "in.jsonl", [{"input": "sky sea"}])
    out = tmp_path / "out.jsonl"

    def refused(*argv, says: str) -> None:
        code, _, err = _classify(capsys, *argv, "--input", good, "--out", out, *CPU)
        assert code == 2 and says in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()

    refused(says="give at least one --model RUN")
    refused("--bag-of-words", train, says="go together")
    refused("--model", runs["a"], "--bag-of-words-val", val, says="go together")
    both = ["--bag-of-words", train, "--bag-of-words-val", val]
    refused(*both, "--bag-of-words-weight", "0.5", says="give both --model and --bag-of-words")
    for weight in ("0", "1", "1.5", "nan"):
        refused("--model", runs["a"], *both, "--bag-of-words-weight", weight, says="between 0 and 1")
    refused("--bag-of-words", tmp_path / "none.jsonl", "--bag-of-words-val", val, says="does not exist")
    other = _write_inputs(tmp_path / "other-val.jsonl", [{"input": "sun", "target": "yellow"}])
    refused("--bag-of-words", train, "--bag-of-words-val", other, says="labels the training file")
    weather = _write_inputs(tmp_path / "w.jsonl", [{"input": "day", "target": t} for t in ("warm", "cold")])
    refused("--model", runs["a"], "--bag-of-words", weather, "--bag-of-words-val", weather, says="share one label")
    code, _, err = _classify(capsys, "--bag-of-words", train, "--bag-of-words-val", val, "--input", good,
                             "--out", val, *CPU)  # fmt: skip
    assert code == 2 and "is a bag-of-words file" in err
