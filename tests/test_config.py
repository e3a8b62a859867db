import json

import pytest

from stlm.config import RunConfig, load_run_config
from stlm.errors import UserError


def test_round_trip_through_dict():
    cfg = RunConfig().with_overrides(
        {"optim.lr": "1e-3", "train.steps": "7", "model": "decoder-10m", "data.cache_dir": "none"}
    )
    assert cfg.optim.lr == 1e-3 and cfg.train.steps == 7 and cfg.model == "decoder-10m" and cfg.data.cache_dir is None
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_toml_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "decoder-tiny"\n[data]\nseq_len = 128\n[optim]\nlr = 1\n', encoding="utf-8")
    cfg = load_run_config(recipe)
    assert cfg.data.seq_len == 128 and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model = ", "malformed"),
        ('[optim]\nlr = "fast"\n', "optim.lr must be float"),
        ("[optim]\nlearning_rate = 1\n", "unknown setting(s) optim.learning_rate"),
        ("[train]\nsteps = 0\n", "train.steps must be >= 1"),
        ("[optim]\nschedule = 'linear'\n", "optim.schedule must be one of"),
        ("optim = 3\n", "optim must be a table"),
    ],
)
def test_malformed_recipes_name_the_problem(tmp_path, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_run_config(recipe)


def test_missing_and_wrong_kind_of_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run_config(tmp_path / "nope.toml")
    (tmp_path / "r.yaml").write_text("a: 1")
    with pytest.raises(UserError, match=".toml or .json"):
        load_run_config(tmp_path / "r.yaml")
    (tmp_path / "r.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UserError, match="malformed"):
        load_run_config(tmp_path / "r.json")


def test_unknown_override():
    with pytest.raises(UserError, match="unknown setting 'optim.nope'"):
        RunConfig().with_overrides({"optim.nope": 1})
    with pytest.raises(UserError, match="unknown setting 'bogus.lr'"):
        RunConfig().with_overrides({"bogus.lr": 1})
