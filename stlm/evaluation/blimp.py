"""BLiMP: 67 phenomena x 1,000 minimal pairs; the model should prefer the grammatical sentence.

A pair counts as right when log P(sentence_good) > log P(sentence_bad), each
sentence scored whole (empty context: after BOS for a causal model, from an
empty encoder input for T5). Accuracy is reported per phenomenon (the file's
UID) and overall (over all pairs; every phenomenon has the same count, so this
equals the mean over phenomena when no --limit cuts them unevenly). A tie
counts as wrong: the release holds 7 pairs whose two sentences are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stlm.errors import UserError
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult, data_subdir
from stlm.evaluation.hub import BLIMP, load_rows
from stlm.evaluation.jsonl import read_jsonl, text_field
from stlm.evaluation.metrics import wilson_interval
from stlm.evaluation.record import markdown_table

N_PHENOMENA = 67
# Overall accuracy (%) reported by Warstadt et al. (2020), for orientation.
REFERENCES = (("5-gram", 61.2), ("LSTM", 69.8), ("Transformer-XL", 69.6), ("GPT-2 (1.5B)", 81.5), ("human", 88.6))
FIELDS = ("sentence_good", "sentence_bad")
# The 67 phenomena (file names of the release, config names on the Hub), in name order.
PHENOMENA = (
    "adjunct_island",
    "anaphor_gender_agreement",
    "anaphor_number_agreement",
    "animate_subject_passive",
    "animate_subject_trans",
    "causative",
    "complex_NP_island",
    "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction",
    "determiner_noun_agreement_1",
    "determiner_noun_agreement_2",
    "determiner_noun_agreement_irregular_1",
    "determiner_noun_agreement_irregular_2",
    "determiner_noun_agreement_with_adj_2",
    "determiner_noun_agreement_with_adj_irregular_1",
    "determiner_noun_agreement_with_adj_irregular_2",
    "determiner_noun_agreement_with_adjective_1",
    "distractor_agreement_relational_noun",
    "distractor_agreement_relative_clause",
    "drop_argument",
    "ellipsis_n_bar_1",
    "ellipsis_n_bar_2",
    "existential_there_object_raising",
    "existential_there_quantifiers_1",
    "existential_there_quantifiers_2",
    "existential_there_subject_raising",
    "expletive_it_object_raising",
    "inchoative",
    "intransitive",
    "irregular_past_participle_adjectives",
    "irregular_past_participle_verbs",
    "irregular_plural_subject_verb_agreement_1",
    "irregular_plural_subject_verb_agreement_2",
    "left_branch_island_echo_question",
    "left_branch_island_simple_question",
    "matrix_question_npi_licensor_present",
    "npi_present_1",
    "npi_present_2",
    "only_npi_licensor_present",
    "only_npi_scope",
    "passive_1",
    "passive_2",
    "principle_A_c_command",
    "principle_A_case_1",
    "principle_A_case_2",
    "principle_A_domain_1",
    "principle_A_domain_2",
    "principle_A_domain_3",
    "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1",
    "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present",
    "sentential_negation_npi_scope",
    "sentential_subject_island",
    "superlative_quantifiers_1",
    "superlative_quantifiers_2",
    "tough_vs_raising_1",
    "tough_vs_raising_2",
    "transitive",
    "wh_island",
    "wh_questions_object_gap",
    "wh_questions_subject_gap",
    "wh_questions_subject_gap_long_distance",
    "wh_vs_that_no_gap",
    "wh_vs_that_no_gap_long_distance",
    "wh_vs_that_with_gap",
    "wh_vs_that_with_gap_long_distance",
)


@dataclass(frozen=True)
class Phenomenon:
    uid: str  # e.g. "adjunct_island"
    field: str  # morphology | syntax | semantics | syntax/semantics
    path: Path
    pairs: list[tuple[str, str]]  # (good, bad)


def load_blimp(directory: Path, limit: int | None = None) -> list[Phenomenon]:
    """Every *.jsonl file of a BLiMP folder, in name order; the first `limit` pairs of each."""
    directory = Path(directory)
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise UserError(f"{directory} holds no BLiMP .jsonl files")
    return [_load_phenomenon(path, limit) for path in files]


def load_blimp_hub(
    limit: int | None = None, cache_dir: Path | None = None, phenomena: tuple[str, ...] | None = None
) -> list[Phenomenon]:
    """The phenomena (default: all 67) from the Hub, one config each, split "train", as `load_blimp` reads the release."""
    out = []
    for uid in PHENOMENA if phenomena is None else phenomena:
        hub = load_rows(BLIMP, "train", config=uid, cache_dir=cache_dir)
        rows = hub.rows[:limit] if limit is not None else hub.rows
        pairs = [(str(r["sentence_good"]), str(r["sentence_bad"])) for r in rows]
        field = str(rows[0].get("field", "")) if rows else ""
        out.append(Phenomenon(uid=uid, field=field, path=hub.files[0] if hub.files else Path(uid), pairs=pairs))
    return out


def _load_phenomenon(path: Path, limit: int | None) -> Phenomenon:
    pairs, field = [], ""
    for line_no, obj in read_jsonl(path, FIELDS, what="BLiMP"):
        good = text_field(obj, "sentence_good", path, line_no)
        bad = text_field(obj, "sentence_bad", path, line_no)
        field = field or str(obj.get("field", ""))
        pairs.append((good, bad))
        if limit is not None and len(pairs) >= limit:
            break
    return Phenomenon(uid=path.stem, field=field, path=path, pairs=pairs)


def accuracy_by_phenomenon(model: EvalModel, phenomena: list[Phenomenon]) -> dict[str, tuple[int, int]]:
    """uid -> (pairs right, pairs); all sentences scored in one batched pass."""
    sentences = sorted({s for p in phenomena for pair in p.pairs for s in pair})
    scores = model.score([("", s) for s in sentences])
    logprob = {s: score.logprob for s, score in zip(sentences, scores)}
    return {p.uid: (sum(logprob[good] > logprob[bad] for good, bad in p.pairs), len(p.pairs)) for p in phenomena}


def run_blimp(model: EvalModel, options: EvalOptions) -> TaskResult:
    if options.data_dir is None:
        phenomena = load_blimp_hub(options.limit, options.hf_cache_dir)
    else:
        phenomena = load_blimp(data_subdir(options, "blimp"), options.limit)
    counts = accuracy_by_phenomenon(model, phenomena)
    right = sum(r for r, _ in counts.values())
    total = sum(n for _, n in counts.values())
    overall = 100.0 * right / total
    lo, hi = (100.0 * x for x in wilson_interval(right, total))  # over pairs, as if independent
    per = {
        p.uid: {"field": p.field, "accuracy": 100.0 * counts[p.uid][0] / counts[p.uid][1], "pairs": counts[p.uid][1]}
        for p in phenomena
    }
    note = "" if len(phenomena) == N_PHENOMENA else f" (only {len(phenomena)} of {N_PHENOMENA} phenomena found)"
    table = markdown_table(
        ("model", "BLiMP accuracy %", "pairs"),
        [("**this model**", f"**{overall:.1f}**", f"{total:,}")]
        + [(name, f"{acc:.1f}", "67,000") for name, acc in REFERENCES],
        right=(1, 2),
    )
    detail = markdown_table(
        ("phenomenon", "field", "accuracy %", "pairs"),
        [(uid, d["field"], f"{d['accuracy']:.1f}", d["pairs"]) for uid, d in per.items()],
        right=(2, 3),
    )
    return TaskResult(
        task="blimp",
        metrics={"accuracy": overall, "pairs": total, "phenomena": len(phenomena)},
        markdown=f"{table}\n\n95% interval (Wilson, over the pairs): {lo:.1f}-{hi:.1f}.\n\nPer phenomenon{note}:\n\n{detail}",
        summary=f"BLiMP accuracy {overall:.1f}% ({lo:.1f}-{hi:.1f}, 95% interval) over {total:,} pairs in "
        f"{len(phenomena)} phenomena (5-gram reference 61.2)",
        data_files=[p.path for p in phenomena],
        settings={
            "limit_per_phenomenon": options.limit,
            "batch_size": model.batch_size,
            "rule": "logP(good) > logP(bad), whole sentence, empty context",
        },
        details={"accuracy_ci95": [lo, hi], "per_phenomenon": per, "references": dict(REFERENCES)},
    )
