"""Fine-tuning evaluation generates in batches, and its predictions are those of one example at a time."""

from __future__ import annotations

import pytest
import torch

from stlm import registry
from stlm.finetune.evaluate import evaluate_examples, generate_predictions
from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText
from stlm.tokenizers import ByT5Tokenizer, ByteTokenizer
from tests.conftest import seeded_model

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "sunlight",
    "falls",
    "on",
    "quiet",
    "hills",
]
# Inputs of many lengths (one past max_input_bytes), in no particular order.
EXAMPLES = [Example(" ".join(WORDS[: (7 * i) % len(WORDS) + 1]) * (1 + i % 3), WORDS[i % len(WORDS)]) for i in range(7)]


@pytest.mark.parametrize("name", ["decoder-tiny", "t5-debug", "pooled-tiny"])
def test_batched_predictions_equal_one_at_a_time(name, one_thread):
    family, model = seeded_model(name)
    tok = ByT5Tokenizer() if family == "t5" else ByteTokenizer()
    fmt = TextToText(
        registry.get_family(family), tok, "\n=> ", 120, 16, None if family == "t5" else model.config.max_seq_len
    )
    alone = [fmt.generate(model, ex.input, 10) for ex in EXAMPLES]
    assert generate_predictions(model, fmt, EXAMPLES, max_new_tokens=10, batch_size=3) == alone
    if family == "decoder":
        scores, predictions = evaluate_examples(
            model,
            fmt,
            EXAMPLES,
            kind="summarization",
            max_new_tokens=10,
            batch_size=4,
            device=torch.device("cpu"),
            progress=True,
        )
        assert predictions == alone and scores["examples"] == len(EXAMPLES)
