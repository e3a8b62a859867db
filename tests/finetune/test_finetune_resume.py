"""Resuming a fine-tuning run with other settings: extend it, or be told which setting cannot change."""

import pytest

from stlm import checkpoint as ckpt_io
from stlm.errors import UserError
from stlm.finetune.config import FinetuneConfig
from stlm.finetune.loop import RESUME_SAFE_KEYS, finetune

from .test_finetune_run import _cfg, colours  # noqa: F401 - the fixture


def test_resume_extends_steps_and_refuses_other_changes(colours, tmp_path, one_thread):
    cfg = _cfg(colours, steps=2, eval_every=2, batch_size=4, score_initial=False, max_new_tokens=3)
    first = finetune(cfg, tmp_path / "run", progress=False)
    assert first.step == 2
    for key, value in [("optim.lr", 0.5), ("task.separator", " -> "), ("train.batch_size", 2)]:
        with pytest.raises(UserError, match=rf"^{key.replace('.', '[.]')} cannot change when resuming"):
            finetune(FinetuneConfig(), tmp_path / "run", resume=True, overrides={key: value}, progress=False)
    assert ckpt_io.latest_checkpoint(tmp_path / "run").name == "step-00000002"
    longer = finetune(FinetuneConfig(), tmp_path / "run", resume=True, overrides={"train.steps": "4"}, progress=False)
    assert longer.step == 4 and longer.results["steps_run"] == 4
    saved = ckpt_io.load_config(ckpt_io.latest_checkpoint(tmp_path / "run"))["finetune"]
    assert saved["train"]["steps"] == 4 and saved["optim"]["warmup_steps"] == 2  # the run's own warmup, kept
    assert "train.steps" in RESUME_SAFE_KEYS and "optim.lr" not in RESUME_SAFE_KEYS
