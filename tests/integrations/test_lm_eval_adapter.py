"""The lm-eval adapter runs local JSONL tasks offline and agrees with stlm's own harness."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'stlm[lm-eval]')")

MC = [
    {"context": "The sky is", "choices": ["blue.", "made of cheese."], "gold": 0},
    {"context": "Fire is", "choices": ["cold.", "hot.", "square."], "gold": 1},
    {"context": "A function returns", "choices": ["a value.", "a banana."], "gold": 0},
    {"context": "Python lists are", "choices": ["mutable.", "immutable."], "gold": 0},
]
DOCS = [{"text": "The quick brown fox jumps over the lazy dog. " * 3}, {"text": "héllo wörld"}]
GEN = [{"context": "The ", "answer": "the"}, {"context": "def f(x):", "answer": "return"}]

TASKS = {
    "stlm_test_mc": """
task: stlm_test_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "stlm_test_rolling": """
task: stlm_test_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/docs.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
""",
    "stlm_test_gen": """
task: stlm_test_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def adapter_model(tiny_run):
    from stlm.integrations.lm_eval_adapter import StlmLM

    return StlmLM(path=str(tiny_run), batch_size="4")


def test_simple_evaluate_runs_local_tasks_offline_and_matches_stlm(adapter_model, tmp_path, one_thread):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from stlm.evaluation.bpb import bits_per_byte
    from stlm.evaluation.tasks import EvalOptions, run_task

    _write(tmp_path / "mc.jsonl", MC)
    _write(tmp_path / "docs.jsonl", DOCS)
    _write(tmp_path / "gen.jsonl", GEN)
    for name, text in TASKS.items():
        (tmp_path / f"{name}.yaml").write_text(text.format(dir=tmp_path), encoding="utf-8")
    out = simple_evaluate(
        model=adapter_model,
        tasks=list(TASKS),
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        bootstrap_iters=0,
        log_samples=False,
    )
    results = out["results"]

    ours = run_task(f"mc:{tmp_path / 'mc.jsonl'}", adapter_model.scorer, EvalOptions())
    assert results["stlm_test_mc"]["acc,none"] * 100 == pytest.approx(ours.metrics["accuracy"])
    assert results["stlm_test_mc"]["acc_norm,none"] * 100 == pytest.approx(ours.metrics["accuracy_norm"])

    s = adapter_model.scorer
    nats = sum(
        bits_per_byte(
            s.model,
            s.tokenizer.encode(d["text"], bos=True),
            context=adapter_model.rolling_context,
            stride=adapter_model.rolling_stride,
        ).nats
        for d in DOCS
    )
    n_bytes = sum(len(d["text"].encode("utf-8")) for d in DOCS)
    assert results["stlm_test_rolling"]["bits_per_byte,none"] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-4)
    assert 0.0 <= results["stlm_test_gen"]["exact_match,none"] <= 1.0


def test_generate_until_stops_at_the_first_stop_string(adapter_model):

    s = adapter_model.scorer
    ids = s.family.stream(
        s.model, s.tokenizer.encode("The ", bos=True), eos_id=s.tokenizer.eos_id, max_new_tokens=24, temperature=0.0
    )
    full = s.tokenizer.decode_bytes(list(ids)).decode("utf-8", errors="replace")
    request = SimpleNamespace(args=("The ", {"until": [full[6:8], "never-seen"], "max_gen_toks": 24}))
    (text,) = adapter_model.generate_until([request])
    assert text == full[: full.find(full[6:8])]
    (whole,) = adapter_model.generate_until(
        [SimpleNamespace(args=("The ", {"until": ["never-seen"], "max_gen_toks": 24}))]
    )
    assert whole == full


def test_loglikelihood_matches_score_continuations(adapter_model):
    from stlm.evaluation.scoring import score_continuations

    s = adapter_model.scorer
    pairs = [("The sky is", " blue."), ("", "Hello."), ("x", "")]
    got = adapter_model.loglikelihood([SimpleNamespace(args=p) for p in pairs])
    direct = score_continuations(s.model, s.tokenizer, s.family, pairs[:2])
    assert [g[0] for g in got[:2]] == pytest.approx([d.logprob for d in direct], abs=1e-5)
    assert got[2] == (0.0, True)
