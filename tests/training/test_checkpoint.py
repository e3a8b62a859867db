import pytest
import torch

from stlm import checkpoint as ckpt_io
from stlm.errors import UserError
from stlm.models.decoder import DecoderConfig
from stlm.registry import build_model


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("decoder", DecoderConfig(d_model=32, n_layers=2, n_heads=2, max_seq_len=64))


def _save(run, step, model, keep=5):
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    return ckpt_io.save_checkpoint(
        run, step, model=model, optimizer=opt, config={"k": step}, state={"loader": {}}, keep=keep
    )


def test_save_load_round_trip_with_tied_weights(tmp_path):
    model = _model()
    ckpt = _save(tmp_path, 3, model)
    assert ckpt.name == "step-00000003" and ckpt_io.resolve_checkpoint(tmp_path) == ckpt
    other = _model(seed=1)
    ckpt_io.load_weights(other, ckpt)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    opt = torch.optim.AdamW(other.parameters())
    state = ckpt_io.load_trainer_state(ckpt, opt)
    assert state["step"] == 3 and len(opt.state) > 0


def test_keeps_only_the_newest(tmp_path):
    model = _model()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, keep=2)
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]


def test_truncated_or_half_written_checkpoints_are_never_latest(tmp_path):
    model = _model()
    good = _save(tmp_path, 1, model)
    bad = _save(tmp_path, 2, model)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated after the fact
    half = tmp_path / "checkpoints" / ".step-00000003.tmp-999"  # a save that died midway
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    no_manifest = tmp_path / "checkpoints" / "step-00000004"
    no_manifest.mkdir()
    assert ckpt_io.latest_checkpoint(tmp_path) == good
    with pytest.raises(UserError, match="truncated"):
        ckpt_io.resolve_checkpoint(bad)
    with pytest.raises(UserError, match="incomplete"):
        ckpt_io.resolve_checkpoint(no_manifest)


def test_corrupt_bytes_are_detected(tmp_path):
    ckpt = _save(tmp_path, 1, _model())
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="SHA-256"):
        ckpt_io.resolve_checkpoint(ckpt)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, full_disk):
    model = _model()
    good = _save(tmp_path, 1, model)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    full_disk(torch, "save")
    with pytest.raises(OSError):
        _save(tmp_path, 2, model)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]  # no temp dir left
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert ckpt_io.resolve_checkpoint(tmp_path) == good


def test_weights_of_another_shape_are_refused(tmp_path):
    ckpt = _save(tmp_path, 1, _model())
    wider = build_model("decoder", DecoderConfig(d_model=64, n_layers=2, n_heads=2, max_seq_len=64))
    with pytest.raises(UserError, match="cannot load|does not fit"):
        ckpt_io.load_weights(wider, ckpt)
