from pathlib import Path

import pytest

from stlm import registry
from stlm.finetune.config import load_finetune_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "finetune").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_finetune_recipe_loads(path):
    cfg = load_finetune_config(path)
    registry.get_config(cfg.init)  # a real preset
    assert cfg.task.name and cfg.metric()


def test_there_are_finetune_recipes():
    assert len(RECIPES) >= 2
