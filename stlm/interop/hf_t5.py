"""Hugging Face T5 checkpoints <-> `T5Model`, through one declarative key map.

`key_map(cfg)` lists every tensor of our state dict with the HF tensors it
is made of; where there are several (q, k, v -> our fused qkv; k, v -> fused
kv; wi_0, wi_1 -> fused wi), they are stacked along dim 0 in that order.
Loading concatenates, exporting splits: the same table both ways, so the two
directions cannot drift apart.

A checkpoint directory is what `save_pretrained` writes: config.json, the
weights as model.safetensors (or sharded with model.safetensors.index.json)
or pytorch_model.bin, and for released models the tokenizer's spiece.model.
HF checkpoints repeat the shared embedding as encoder.embed_tokens,
decoder.embed_tokens and (tied) lm_head; those copies are checked and dropped.

Nothing here imports transformers: the files are read with safetensors and
`torch.load(weights_only=True)`, which runs no pickled code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from stlm.errors import UserError, torch_load_message
from stlm.interop.hf_tokenizer import byte_tokenizer_files
from stlm.models.t5 import T5Config, T5Model
from stlm.tokenizers import ByT5Tokenizer, Tokenizer

# Our key -> the HF keys it is stacked from (dim 0), for the parts outside the layers.
_GLOBAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embed.weight", ("shared.weight",)),
    ("encoder_bias.weight", ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)),
    ("decoder_bias.weight", ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)),
    ("encoder_norm.weight", ("encoder.final_layer_norm.weight",)),
    ("decoder_norm.weight", ("decoder.final_layer_norm.weight",)),
)
_UNTIED_HEAD = (("head.weight", ("lm_head.weight",)),)

# Per layer i: our key under encoder.{i} / decoder.{i} -> HF keys under encoder.block.{i} / decoder.block.{i}.
_ENCODER_LAYER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_norm.weight", ("layer.0.layer_norm.weight",)),
    ("attn.qkv.weight", tuple(f"layer.0.SelfAttention.{p}.weight" for p in "qkv")),
    ("attn.out.weight", ("layer.0.SelfAttention.o.weight",)),
    ("ff_norm.weight", ("layer.1.layer_norm.weight",)),
)
_DECODER_LAYER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_norm.weight", ("layer.0.layer_norm.weight",)),
    ("attn.qkv.weight", tuple(f"layer.0.SelfAttention.{p}.weight" for p in "qkv")),
    ("attn.out.weight", ("layer.0.SelfAttention.o.weight",)),
    ("cross_norm.weight", ("layer.1.layer_norm.weight",)),
    ("cross.q.weight", ("layer.1.EncDecAttention.q.weight",)),
    ("cross.kv.weight", ("layer.1.EncDecAttention.k.weight", "layer.1.EncDecAttention.v.weight")),
    ("cross.out.weight", ("layer.1.EncDecAttention.o.weight",)),
    ("ff_norm.weight", ("layer.2.layer_norm.weight",)),
)
# FFN: our ff.* -> HF DenseReluDense.* under the layer's last sub-layer (1 encoder, 2 decoder).
_FFN: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "relu": (("wi.weight", ("wi.weight",)), ("wo.weight", ("wo.weight",))),
    "gated-gelu": (("wi.weight", ("wi_0.weight", "wi_1.weight")), ("wo.weight", ("wo.weight",))),
}

# HF keys that duplicate the shared embedding, or that old checkpoints carry
# and no model reads (cross-attention never has a position bias).
_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_UNUSED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def key_map(cfg: T5Config) -> list[tuple[str, tuple[str, ...]]]:
    """Every tensor of `T5Model(cfg).state_dict()` with the HF keys it is stacked from."""
    entries = list(_GLOBAL) + ([] if cfg.tie_embeddings else list(_UNTIED_HEAD))
    stacks = (("encoder", cfg.n_layers, _ENCODER_LAYER, 1), ("decoder", cfg.n_decoder_layers, _DECODER_LAYER, 2))
    for stack, n_layers, layer_map, ff_sublayer in stacks:
        assert n_layers is not None
        for i in range(n_layers):
            ours, theirs = f"{stack}.{i}.", f"{stack}.block.{i}."
            entries += [(ours + k, tuple(theirs + h for h in hf)) for k, hf in layer_map]
            entries += [
                (f"{ours}ff.{k}", tuple(f"{theirs}layer.{ff_sublayer}.DenseReluDense.{h}" for h in hf))
                for k, hf in _FFN[cfg.ff_kind]
            ]
    return entries


# --- loading --------------------------------------------------------------------------------------


def load_hf_t5(directory: str | os.PathLike) -> tuple[T5Model, T5Config, Path | None]:
    """(model in fp32 eval mode, its config, spiece.model path or None) from an HF T5 checkpoint directory."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"no checkpoint directory {str(root)!r}")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise UserError(f"{str(root)!r} has no config.json; is it a Hugging Face model directory?")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {str(config_path)!r}: {exc}") from None
    cfg = T5Config.from_hf_config(hf_config)

    tensors = _read_weights(root)
    state = _to_ours(cfg, tensors)
    with torch.device("meta"):
        model = T5Model(cfg)
    # assign=True adopts the loaded tensors instead of copying into meta ones.
    model.load_state_dict(state, strict=True, assign=True)
    spiece = root / "spiece.model"
    return model.eval(), cfg, spiece if spiece.is_file() else None


def _read_weights(root: Path) -> dict[str, torch.Tensor]:
    single, pickled = root / "model.safetensors", root / "pytorch_model.bin"
    index = root / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"cannot read the shard index {str(index)!r}: {exc}") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(_read_safetensors(_shard_path(root, shard, index)))
        return tensors
    if pickled.is_file():
        try:
            data = torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, not a torch file, pickled code: all the user's file
            raise UserError(
                f"cannot read {str(pickled)!r} (truncated or not a PyTorch checkpoint?): {torch_load_message(exc)}"
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise UserError(f"{str(pickled)!r} does not hold a state dict of tensors")
        return data
    raise UserError(
        f"{str(root)!r} has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _shard_path(root: Path, shard: object, index: Path) -> Path:
    """A shard the index names, which must be a file inside the checkpoint directory: an imported
    directory is untrusted data and may not make stlm read files elsewhere."""
    if not isinstance(shard, str) or not shard:
        raise UserError(f"the shard index {str(index)!r} names a shard that is not a file name: {shard!r}")
    path = root / shard
    if Path(shard).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise UserError(
            f"the shard index {str(index)!r} names {shard!r}, outside {str(root)!r}; "
            "shards must be files in the model directory"
        )
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} is missing")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for a truncated or corrupt header
        raise UserError(f"cannot read {str(path)!r} (truncated or corrupt safetensors file?): {exc}") from None


def _to_ours(cfg: T5Config, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF tensors -> our state dict in fp32, every shape checked against `cfg`."""
    tensors = dict(tensors)
    if "shared.weight" not in tensors:
        # Some exports keep only a stack's copy of the shared embedding.
        for alias in _ALIASES:
            if alias in tensors:
                tensors["shared.weight"] = tensors[alias]
                break
    if cfg.tie_embeddings and "lm_head.weight" in tensors and "shared.weight" in tensors:
        if not torch.equal(tensors["lm_head.weight"], tensors["shared.weight"]):
            raise UserError(
                "config.json says the embeddings are tied (tie_word_embeddings), but lm_head.weight differs "
                "from shared.weight; set tie_word_embeddings to false in config.json if the head is separate"
            )
    if not cfg.tie_embeddings and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        # transformers 5 ties the matrices even for unscaled (v1.1-style) configs and saves one
        # copy. A clone: the two parameters must not share storage once they train apart.
        tensors["lm_head.weight"] = tensors["shared.weight"].clone()

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in T5Model(cfg).state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    used: set[str] = set()
    for ours, theirs in key_map(cfg):
        rows = shapes[ours][0] // len(theirs)
        expected = (rows, *shapes[ours][1:])
        parts = []
        for key in theirs:
            if key not in tensors:
                missing.append(key)
                continue
            tensor = tensors[key]
            if tuple(tensor.shape) != expected:
                raise UserError(
                    f"checkpoint tensor {key} has shape {tuple(tensor.shape)}, but config.json implies {expected}"
                )
            parts.append(tensor)
            used.add(key)
        if len(parts) == len(theirs):
            state[ours] = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)).to(torch.float32)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"checkpoint is missing {', '.join(missing[:5])}{more} (config.json and weights disagree?)")
    extra = sorted(set(tensors) - used - {"shared.weight", "lm_head.weight", *_ALIASES, *_UNUSED})
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise UserError(f"checkpoint has tensors this config does not use: {', '.join(extra[:5])}{more}")
    return state


# --- export ---------------------------------------------------------------------------------------


def export_hf_t5(
    model: T5Model,
    directory: str | os.PathLike,
    spiece: str | os.PathLike | None = None,
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write config.json + model.safetensors (+ spiece.model) that transformers loads as this model.

    With a byte-vocabulary `tokenizer` (ByT5's layout) the tokenizer files are written too
    (`hf_tokenizer.py`), so `AutoTokenizer` gives stlm's ids instead of guessing a SentencePiece one.

    Each file is written to a temporary name, flushed to disk and renamed, so an
    interrupted export never leaves a half-written file under the final name.
    Returns the directory.
    """
    from safetensors.torch import save_file

    cfg = model.config
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if spiece is not None and not Path(spiece).is_file():
        raise UserError(f"no SentencePiece model at {str(spiece)!r}")
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map(cfg):
        for key, part in zip(theirs, state[ours].detach().chunk(len(theirs), dim=0)):
            tensors[key] = part.contiguous().cpu()

    config_text = json.dumps(cfg.to_hf_config(), indent=2, sort_keys=True) + "\n"
    _atomic_write(root / "config.json", lambda tmp: Path(tmp).write_text(config_text, encoding="utf-8"))
    _atomic_write(root / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    if spiece is not None:
        _atomic_write(root / "spiece.model", lambda tmp: shutil.copyfile(spiece, tmp))
    if isinstance(tokenizer, ByT5Tokenizer):
        for name, text in byte_tokenizer_files(tokenizer, None).items():
            _atomic_write(root / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
    return root


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable (POSIX; directories cannot be opened on Windows).
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
