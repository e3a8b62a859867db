from pathlib import Path

import pytest

from stlm import registry
from stlm.config import load_run_config

# Fine-tuning recipes are another config type (tests/finetune/test_finetune_recipes.py).
RECIPES = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "recipes").rglob("*.toml") if "finetune" not in p.parts
)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads_and_names_a_real_preset(path):
    cfg = load_run_config(path)
    family, model_cfg = registry.get_config(cfg.model)
    assert cfg.data.seq_len <= model_cfg.max_seq_len


def test_there_are_recipes():
    assert RECIPES
