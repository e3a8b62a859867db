"""The ladder's rungs: exact parameter accounting, equal totals within 2%, resume equals uninterrupted."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from bench.pooling_ladder import (
    TOLERANCE,
    VARIANTS,
    breakdown,
    load_rung,
    main,
    new_training,
    parser,
    read_curve,
    rung_specs,
    train_rung,
    wikitext_articles,
)
from stlm import registry


def _unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_equal_params_rungs_are_within_2_percent_with_exact_accounting():
    specs = rung_specs("10m", "equal-params")
    assert [s.name for s in specs] == ["pooled-space", "pooled-entropy", "unpooled", "bpe-4k", "bpe-16k", "bpe-32k"]
    target = registry.count_params("pooled", registry.get_config("pooled-10m")[1])
    totals = {}
    for spec in specs:
        parts = breakdown(spec)
        model = registry.build_model(spec.family, spec.config)
        # The accounting is the model: every parameter counted once, the parts add up to it.
        assert parts["total"] == _unique_params(model) == parts["tables"] + parts["core"] + parts["other"]
        if spec.family == "decoder":  # tied: the one vocabulary table is the embedding
            assert parts["tables"] == model.embed.weight.numel() == spec.bpe_vocab * spec.config.d_model
            assert spec.config.vocab_size == spec.bpe_vocab
        totals[spec.name] = parts["total"]
    assert totals["pooled-space"] == target
    assert (max(totals.values()) - min(totals.values())) / target <= TOLERANCE
    # A large vocabulary leaves a small core: that is the comparison.
    cores = [breakdown(s)["core"] for s in specs if s.family == "decoder"]
    assert cores == sorted(cores, reverse=True)


def test_variant_rungs_are_within_2_percent_and_change_only_what_they_name():
    specs = rung_specs("10m", "variants")
    assert [s.name for s in specs] == ["pooled-entropy", *(f"pooled-{v}" for v in VARIANTS)]
    assert specs[0] == next(s for s in rung_specs("10m") if s.name == "pooled-entropy")  # the same run
    base = specs[0].config
    for spec in specs[1:]:
        parts = breakdown(spec)
        assert parts["total"] == _unique_params(registry.build_model(spec.family, spec.config))
        assert abs(parts["total"] - breakdown(specs[0])["total"]) / parts["total"] <= TOLERANCE
        change = VARIANTS[spec.name.removeprefix("pooled-")]
        for key, value in change.items():
            assert getattr(spec.config, key) == value != getattr(base, key)
        assert base.boundary == "entropy" and spec.config.boundary == change.get("boundary", "entropy")
        assert spec.config.hash_ngrams == change.get("hash_ngrams", base.hash_ngrams)


def test_view_all_is_the_ladder_and_its_variants_each_once():
    names = [s.name for s in rung_specs("10m", "all")]
    main, variants = rung_specs("10m"), rung_specs("10m", "variants")
    assert names == [s.name for s in main] + [s.name for s in variants[1:]]
    assert len(set(names)) == len(names) and "pooled-entropy" in names


def test_entropy_rung_is_fitted_before_training(tmp_path, one_thread):
    # An unfitted entropy rule closes a patch only at the cap: the rung would be a fixed-length one.
    args = parser().parse_args(["train", "--out", str(tmp_path / "out"), *_corpus_args(tmp_path)])
    spec = next(s for s in rung_specs("tiny", "equal-params", ()) if s.name == "pooled-entropy")
    model = new_training(load_rung(spec, args), 1e-3, 10, args)[0]
    assert model.boundaries.fitted and torch.isfinite(model.boundaries.threshold)


def test_equal_core_view_keeps_one_core():
    cores = {breakdown(s)["core"] for s in rung_specs("10m", "equal-core")}
    assert len(cores) == 1


def _corpus_args(tmp_path) -> list[str]:
    """A small word corpus on disk and the ladder flags that train on it."""
    rng = random.Random(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [
        "the",
        "model",
        "reads",
        "bytes",
        "and",
        "pools",
        "them",
        "into",
        "patches",
        "for",
        "a",
        "deep",
        "narrow",
        "core",
    ]
    for i in range(30):
        (corpus / f"{i:02d}.txt").write_text(" ".join(rng.choices(words, k=300)) + "\n", encoding="utf-8")
    common = ["--size", "tiny", "--data", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--wikitext", "none"]
    common += ["--seq-len", "64", "--batch", "2", "--val-bytes", "2048", "--curve-points", "3", "--calib-steps", "1"]
    return common


def test_resumed_rung_equals_an_uninterrupted_one(tmp_path, one_thread):
    common = _corpus_args(tmp_path)
    spec = rung_specs("tiny", "equal-params", ())[0]
    results = {}
    for name, pieces in (("whole", [0]), ("pieces", [2, 4, 0])):
        args = parser().parse_args(["train", "--out", str(tmp_path / name), *common])
        rung = load_rung(spec, args)
        for stop_at in pieces:
            summary = train_rung(rung, tmp_path / name / "r", 2e-3, 0.0, 5.0, args, steps=6, stop_at=stop_at)
        assert summary == {"rung": "pooled-space", "step": 6, "total_steps": 6, "done": True}
        state = torch.load(tmp_path / name / "r" / "state.pt", weights_only=True)
        curve = [{k: v for k, v in p.items() if k != "wall_s"} for p in read_curve(tmp_path / name / "r")]
        results[name] = (state["model"], curve)
    (whole, curve_whole), (pieces, curve_pieces) = results["whole"], results["pieces"]
    assert [p["step"] for p in curve_whole] == [1, 3, 6]  # denser early
    assert curve_pieces == curve_whole and json.dumps(curve_whole)  # same numbers, plain JSON
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)


def test_train_says_when_a_piece_stops_before_the_budget(tmp_path, one_thread, capsys):
    common = [
        *_corpus_args(tmp_path),
        "--out",
        str(tmp_path / "ladder"),
        "--rung",
        "pooled-space",
        "--steps",
        "3",
        "--bpe-vocabs",
        "",
    ]
    main(["train", *common, "--stop-at", "1"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["done"] is False
    assert "stopped at step 1 of 3 (--stop-at 1); run `train` again to continue" in captured.err
    main(["train", *common])  # the rest of the budget: done, and nothing to say
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"rung": "pooled-space", "step": 3, "total_steps": 3, "done": True}
    assert "stopped" not in captured.err


def test_overlap_splits_the_curves_last_validation_bpb(tmp_path, one_thread, capsys):
    """`overlap` reads a trained rung's held-out BPB on repeated and other bytes; over all bytes it is the
    curve's own last point, and the parts average to it."""
    common = _corpus_args(tmp_path)
    out = tmp_path / "ladder"
    args = parser().parse_args(["train", "--out", str(out), *common])
    spec = rung_specs("tiny", "equal-params", ())[0]
    train_rung(load_rung(spec, args), out / spec.name, 2e-3, 0.0, 5.0, args, steps=3)
    main(
        [
            "overlap",
            "--out",
            str(out),
            "--rungs",
            spec.name,
            "--window",
            "16",
            "--threads",
            "1",
            "--bpe-vocabs",
            "",
            *common,
        ]
    )
    captured = capsys.readouterr()
    row = json.loads(captured.err.strip().splitlines()[-1])
    val = row["val"]
    assert row["rung"] == spec.name and row["step"] == 3 and 0 < val["share"] < 1  # a 12-word corpus repeats
    assert val["all"] == pytest.approx(read_curve(out / spec.name)[-1]["val_bpb"], rel=1e-6)
    assert val["all"] == pytest.approx(val["share"] * val["repeated"] + (1 - val["share"]) * val["other"])
    assert f"| {spec.name} " in captured.out and "of the training split" in captured.out


def test_wikitext_is_cut_into_whole_articles():
    text = " \n = First = \n \n a b .\n = = Part = = \n c .\n = Second = \n d .\n"
    articles = wikitext_articles(text)
    assert "".join(articles) == text  # nothing lost, in order
    assert [a.strip().splitlines()[0].strip() for a in articles] == ["= First =", "= Second ="]  # sections stay inside


def test_a_sweep_whose_best_rate_is_on_the_edge_tries_beyond_it(tmp_path, monkeypatch):
    import bench.pooling_ladder as ladder

    def fake_train(rung, run_dir, lr, *a, **k):  # the validation BPB is lowest at lr 8e-3
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "curve.jsonl").write_text(json.dumps({"val_bpb": abs(math.log(lr / 8e-3))}) + "\n")
        return {"rung": "r", "step": 1, "total_steps": 1, "done": True}

    monkeypatch.setattr(ladder, "train_rung", fake_train)
    rung = ladder.Rung(rung_specs("tiny", "equal-params", ())[0], None, None, None, None, 8)
    for lrs, tried, best in (
        ("1e-3,2e-3,4e-3", ["0.001", "0.002", "0.004", "0.008", "0.016"], 8e-3),
        ("2e-2,4e-2", ["0.02", "0.04", "0.01", "0.005"], 1e-2),
    ):
        out = tmp_path / lrs
        args = parser().parse_args(["sweep", "--rung", "r", "--out", str(out), "--lrs", lrs])
        ladder.run_sweep(rung, args)
        assert list(json.loads((out / "sweep" / "r.json").read_text())) == tried  # two steps at most
        assert ladder.best_lr(out, "r") == pytest.approx(best)


def test_report_reads_every_curve_at_equal_flops_and_time(tmp_path, capsys):
    # Two straight-line curves on disk: the tables must read them at the common range and say who leads.
    out = tmp_path / "out"
    lines = {
        "pooled-entropy": [(1e12, 1, 4.0, 5.0), (9e12, 9, 2.0, 3.0)],  # ends at 9 TFLOP, 9 steps
        "bpe-16k": [(1e12, 2, 3.0, 4.0), (8e12, 16, 2.3, 3.3)],  # ends first: 8 TFLOP is the common range
    }
    for name, points in lines.items():
        (out / name).mkdir(parents=True)
        rows = [{"flops": f, "step": s, "wall_s": 0.0, "val_bpb": v, "wikitext_bpb": w} for f, s, v, w in points]
        (out / name / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    calibration = {"pooled-entropy": {"step_s": 60.0}, "bpe-16k": {"step_s": 30.0}}  # time = steps x step_s
    (out / "calibration.json").write_text(json.dumps(calibration))
    from bench.pooling_ladder import cmd_report

    cmd_report(parser().parse_args(["report", "--out", str(out)]))
    text = capsys.readouterr().out
    assert "equal FLOPs at 8.0 TFLOP, equal calibrated time at 8.0 min" in text
    # pooled-entropy at 8 TFLOP: 4 - 2 x 7/8 = 2.25; bpe-16k ends at 2.3, so pooled leads by 0.05.
    flops_table = text.split("validation BPB along the curves, at equal FLOPs")[1].split("WikiText-2")[0]
    assert "| pooled-entropy" in flops_table and "2.2500 |" in flops_table
    assert "| best pooled - best other | " in flops_table and "-0.0500 |" in flops_table
    # 8 calibrated minutes: pooled-entropy at step 8 (val 2.25), bpe-16k at step 16, its end (2.3).
    time_table = text.split("validation BPB along the curves, at equal calibrated time")[1].split("WikiText-2")[0]
    assert "2.2500 |" in time_table and "2.3000 |" in time_table
    # The curves cross where 1 - 0.15 (x - 1) = 0: pooled-entropy is ahead from 7.67 TFLOP on.
    crossings = text.split("where the curves cross (validation BPB")[1].split("where the curves cross")[0]
    assert "| pooled-entropy | bpe-16k |" in crossings and "7.7 TFLOP |" in crossings
    assert "-0.0500 @ 8.0 TFLOP |" in crossings
    assert (out / "ladder-flops.png").stat().st_size > 0 and (out / "ladder-wall_s.png").stat().st_size > 0


def test_crossing_finds_where_a_curve_passes_below_for_good():
    from bench.pooling_ladder import crossing

    def curve(points):
        return [{"flops": x, "val_bpb": y} for x, y in points]

    b = curve([(0, 3.0), (10, 2.5)])
    once = crossing(curve([(0, 4.0), (10, 2.0)]), b, "val_bpb")  # diff 1 -> -0.5: zero at 10/1.5
    assert once["end"] == 10 and math.isclose(once["lead"], -0.5) and math.isclose(once["since"], 20 / 3)
    # Below, back above, below again: the crossing that counts is the last one (diff +0.5 at 6 -> -0.5 at 8).
    twice = crossing(curve([(0, 2.0), (4, 2.7), (6, 3.2), (8, 2.1), (10, 2.0)]), b, "val_bpb")
    assert math.isclose(twice["since"], 7.0)
    assert crossing(curve([(0, 2.0), (10, 1.0)]), b, "val_bpb")["since"] == 0  # ahead all along
    behind = crossing(curve([(0, 4.0), (10, 2.6)]), b, "val_bpb")
    assert behind["since"] is None and math.isclose(behind["lead"], 0.1)
    # Different ranges: only the common one counts; no overlap, no verdict.
    assert crossing(curve([(5, 4.0), (20, 1.0)]), b, "val_bpb")["end"] == 10
    assert crossing(curve([(11, 2.0), (20, 1.0)]), b, "val_bpb")["end"] is None


@pytest.mark.parametrize(
    "preset, variant",
    [
        ("pooled-10m-hash", "pooled-more-hash-7680"),
        ("pooled-10m-hash-long", "pooled-hash-long"),
        ("pooled-10m-hash-space", "pooled-hash-space"),
        ("pooled-10m-hash-long-3to6", "pooled-hash-long-3to6"),
        ("pooled-10m-hash-long-3to8", "pooled-hash-long-3to8"),
    ],
)
def test_the_hash_presets_are_the_measured_variants(preset, variant):
    # Each preset ships exactly the config its ladder curve was measured with.
    measured = next(s for s in rung_specs("10m", "variants") if s.name == variant)
    assert registry.get_config(preset) == ("pooled", measured.config)


def test_an_exported_rung_is_a_stlm_run_with_the_same_model(tmp_path, one_thread):
    from stlm import checkpoint as ckpt_io

    common = [*_corpus_args(tmp_path), "--bpe-vocabs", ""]  # the byte rungs only
    args = parser().parse_args(["train", "--out", str(tmp_path / "out"), *common])
    spec = next(s for s in rung_specs("tiny", "equal-params", ()) if s.name == "pooled-entropy")
    train_rung(load_rung(spec, args), tmp_path / "out" / spec.name, 2e-3, 0.0, 5.0, args, steps=3)
    to = tmp_path / "run"
    main(["export", "--out", str(tmp_path / "out"), "--rung", spec.name, "--to", str(to), *common])
    loaded = ckpt_io.load(to)
    state = torch.load(tmp_path / "out" / spec.name / "state.pt", weights_only=True)
    assert loaded.path.name == "step-00000003" and loaded.record.model_config == spec.config
    exported = loaded.model.state_dict()
    assert exported.keys() == state["model"].keys()
    assert all(torch.equal(exported[k], state["model"][k]) for k in exported)  # the fitted entropy rule too
    assert loaded.model.boundaries.fitted
    assert loaded.tokenizer.encode("bytes") == list(b"bytes")
    with pytest.raises(SystemExit, match="already exists"):  # a folder that exists is never written into
        main(["export", "--out", str(tmp_path / "out"), "--rung", spec.name, "--to", str(to), *common])
    other = next(s.name for s in rung_specs("tiny", "equal-params", ()) if s.name != spec.name)
    (tmp_path / "out" / other).mkdir()
    (tmp_path / "out" / other / "state.pt").write_bytes((tmp_path / "out" / spec.name / "state.pt").read_bytes())
    with pytest.raises(SystemExit, match=f"holds no {other} model"):  # another rung's state: refused, not loaded
        main(["export", "--out", str(tmp_path / "out"), "--rung", other, "--to", str(tmp_path / "x"), *common])
    assert not (tmp_path / "x").exists()
