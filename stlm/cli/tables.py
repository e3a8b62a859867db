"""The plain-text tables the commands print: models, corpora, fine-tuning results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_PARTS = ("embeddings", "hash_tables", "local_encoder", "pooling", "core", "local_decoder", "head", "total")
_FINETUNE_KEYS = {
    "summarization": ("rouge1", "rouge2", "rougeL", "loss"),
    "qa": ("exact_match", "f1", "loss"),
    "classification": ("accuracy", "accuracy_logprob", "loss"),
}


def print_table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_models(models: Sequence[tuple[str, Any, Any]], *, parts: bool) -> None:
    """(name, family row, config) rows: exact parameter count, memory and shape; with `parts`, pooled breakdowns."""
    rows = [("model", "family", "params", "fp32 MiB", "bf16 MiB", "shape")]
    for name, family, cfg in models:
        n = family.count_params(cfg)
        rows.append((name, family.name, f"{n:,}", f"{n * 4 / 2**20:.1f}", f"{n * 2 / 2**20:.1f}", family.describe(cfg)))
    print_table(rows, right=(2, 3, 4))
    breakdowns = [(name, b) for name, family, cfg in models if (b := family.breakdown(cfg))] if parts else []
    if not breakdowns:
        return
    print("\nPooled byte models, parameters by part (hash tables are included in the total):")
    print_table(
        [("model", *_PARTS)] + [(name, *(f"{b[k]:,}" for k in _PARTS)) for name, b in breakdowns],
        right=range(1, len(_PARTS) + 1),
    )
    print(
        "\nWhat each sharing option removes: when on, against the same network without it; when off (in brackets),\n"
        "what switching it on would remove (repeat_blocks: x2, against an unrepeated core of the doubled depth);\n"
        "together: what the options that are on remove against an untied, unshared, unrepeated core of the same depth."
    )
    options = ("tie_head", "share_ffn", "repeat_blocks")
    savings = [("model", *options, "on, together")]
    for name, b in breakdowns:
        cells = [
            f"{o.setting}: {o.saves:,}" if o.on else f"off ({o.saves:,})" for o in (b["options"][k] for k in options)
        ]
        savings.append((name, *cells, f"{b['together']:,}"))
    print_table(savings, right=(1, 2, 3, 4))


def print_finetune(results: dict[str, Any]) -> None:
    """Starting model, fine-tuned model and baselines side by side on the final split."""
    keys = _FINETUNE_KEYS[results["kind"]]
    rows = [("model", *keys)]
    tuned = "fine-tuned (last step, refit on train + val)" if results.get("refit") else "fine-tuned (best)"
    named = [("starting model", results["initial"]), (tuned, results["finetuned"])]
    for name, scores in named + [(f"baseline: {k}", v) for k, v in results["baselines"].items()]:
        if scores:
            rows.append((name, *(f"{scores[k]:.4f}" if k in scores else "-" for k in keys)))
    kind = results["kind"] + (", channel direction" if results.get("direction") == "channel" else "")
    print(
        f"{results['task']} ({kind}), scored on {results['scored_on']} ({results['finetuned']['examples']} examples):"
    )
    print_table(rows, right=range(1, len(rows[0])))
    if (note := one_answer_note(results)) is not None:
        print(note)
    sig = results.get("significance")
    if sig:
        lo, hi = sig["accuracy_ci95"]
        print(f"fine-tuned accuracy: 95% interval {lo:.4f}-{hi:.4f} (Wilson)")
        for name, t in sig["against"].items():
            verdict = "a significant difference" if t["p_value"] < 0.05 else "no significant difference"
            print(
                f"against {name} on the same examples: {t['model_only_right']} right where it was wrong, "
                f"{t['baseline_only_right']} wrong where it was right; "
                f"exact McNemar p = {t['p_value']:.3g} ({verdict} at 0.05)"
            )


def one_answer_note(results: dict[str, Any]) -> str | None:
    """For a classifier that gives every scored example one answer, a line saying what that means.

    Such a model has learned how often each label occurs, not anything about
    the input: the majority-prior trap docs/finetune.md describes.
    """
    rows = results.get("predictions") or []
    if results["kind"] != "classification" or len({row["target"].strip() for row in rows}) < 2:
        return None
    for key, how in (("prediction_logprob", "by label log-probability"), ("prediction", "generated")):
        answers = {row[key] for row in rows if key in row}
        if len(answers) == 1:
            (answer,) = answers
            return (
                f"note: the fine-tuned model gives all {len(rows)} examples the same answer ({answer!r}, {how}): "
                "it has learned how often each label occurs, not the input. Try more steps, another --lr or a "
                "pretrained --model (docs/finetune.md, 'An encoder-decoder from scratch')"
            )
    return None


def print_spin(results: dict[str, Any]) -> None:
    """One row per SPIN iteration (0: the starting model): the task metric and the implicit-reward accuracy."""
    keys = _FINETUNE_KEYS[results["kind"]]
    extra = ("train_reward_accuracy", "val_reward_accuracy", "val_reward_margin", "val_opponent_exact")
    rows = [("iteration", *keys, "reward acc (train)", "reward acc (val)", "margin (val)", "opponent = gold")]
    for row in results["iterations"]:
        cells = [f"{row[f'val_{k}']:.4f}" if f"val_{k}" in row else "-" for k in keys]
        cells += [f"{row[k]:.3f}" if k in row else "-" for k in extra]
        rows.append((str(row["iteration"]), *cells))
    print(f"SPIN on {results['task']} ({results['kind']}, beta {results['beta']}), scored on validation:")
    print_table(rows, right=range(1, len(rows[0])))


def print_selfplay(result: dict[str, Any]) -> None:
    """The greedy policy against the random and the perfect player, from each seat."""
    rows = [("opponent", "seat", "games", "win", "draw", "loss")]
    for who in ("random", "minimax"):
        for seat in (0, 1):
            t = result[f"{who}_seat{seat}"]
            rows.append(
                (
                    who,
                    f"{seat} ({'first' if seat == 0 else 'second'})",
                    str(sum(t.values())),
                    str(t["win"]),
                    str(t["draw"]),
                    str(t["loss"]),
                )
            )
    print_table(rows, right=range(2, 6))
    print(f"illegal-move rate of the policy's moves: {result['illegal_rate']:.4f}")
