import pytest
import torch

from stlm.config import OptimConfig
from stlm.errors import UserError
from stlm.models.decoder import DecoderConfig
from stlm.registry import build_model
from stlm.training.optim import build_optimizer, lr_at


def test_cosine_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_wsd_holds_then_decays_linearly():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70
    assert lrs[-1] == pytest.approx(0.0) and lrs[89] == pytest.approx(0.5)


def test_weight_decay_only_on_matrices():
    model = build_model("decoder", DecoderConfig(d_model=32, n_layers=2, n_heads=2))
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name, lr", [("adamw", 1e-2), ("adamw-rms", 2e-2), ("adafactor", 1e-2)])
def test_every_optimizer_reduces_a_loss_and_round_trips_its_state(name, lr):
    torch.manual_seed(0)
    model = build_model("decoder", DecoderConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=32))
    cfg = OptimConfig(name=name, lr=lr, weight_decay=0.0)  # each at its recipe's learning rate
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    ids = torch.randint(0, 256, (2, 17))
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.3
    fresh = build_optimizer(model, cfg, torch.device("cpu"))
    fresh.load_state_dict(opt.state_dict())
    assert len(fresh.state) == len(opt.state)


def test_adamw_rms_step_scales_with_weight_rms():
    from stlm.training.optim import AdamWScale

    small = torch.nn.Parameter(torch.full((4, 4), 0.01))
    large = torch.nn.Parameter(torch.full((4, 4), 1.0))
    opt = AdamWScale([small, large], lr=0.1)
    small.grad = torch.ones(4, 4)
    large.grad = torch.ones(4, 4)
    opt.step()
    # First Adam step moves each weight by lr * rms (m_hat / sqrt(v_hat) = 1).
    assert torch.allclose(0.01 - small.detach(), torch.full((4, 4), 0.1 * 0.01), rtol=1e-4)
    assert torch.allclose(1.0 - large.detach(), torch.full((4, 4), 0.1 * 1.0), rtol=1e-4)


def test_inverse_sqrt_schedule():
    cfg = OptimConfig(lr=0.01, warmup_steps=100, schedule="inverse-sqrt")
    assert lr_at(50, 10_000, cfg) == pytest.approx(0.01 * 51 / 100)
    assert lr_at(99, 10_000, cfg) == pytest.approx(0.01)
    assert lr_at(399, 10_000, cfg) == pytest.approx(0.01 * 0.5)


def test_default_warmup_is_a_fraction_of_the_run_so_short_runs_decay():
    from stlm.training.optim import resolve_warmup, warmup_steps

    cfg = OptimConfig(lr=1.0, schedule="cosine", min_lr_ratio=0.1)
    assert cfg.warmup_steps is None and warmup_steps(cfg, 1000) == 100 and warmup_steps(cfg, 20) == 2
    lrs = [lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-1] < 0.2  # a 20-step run decays almost to the floor (a fixed 100-step warmup never left warmup)
    assert resolve_warmup(cfg, 20).warmup_steps == 2
    explicit = OptimConfig(lr=1.0, warmup_steps=7)  # --warmup 7
    assert warmup_steps(explicit, 20) == 7 and resolve_warmup(explicit, 1000).warmup_steps == 7
    with pytest.raises(UserError, match="optim.warmup_fraction must be in"):
        OptimConfig(warmup_fraction=1.5)
