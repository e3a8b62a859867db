"""Data shared by the fine-tuning tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """40 examples: inputs naming red things -> "red", blue things -> "blue"."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("ft") / "colours.jsonl"
    rows = []
    for i in range(40):
        label = rng.choice(["red", "blue"])
        words = ("apple cherry fire" if label == "red" else "sky sea ice").split()
        rng.shuffle(words)
        rows.append(json.dumps({"text": " ".join(words) + f" {i}", "label": label}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
