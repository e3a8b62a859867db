"""ONNX graphs with past key values for the decoder and T5 families, and greedy loops over them.

Decoder family: one graph, `model.onnx`, that prefills and steps alike.

    inputs   input_ids (B, T) int64
             past_key.{i}, past_value.{i} (B, H, P, Dh) float32, i < n_layers; P = 0 for a prompt
    outputs  logits (B, T, V); present_key.{i}, present_value.{i} (B, H, P + T, Dh)

The T tokens sit at positions P .. P + T - 1 (their rotary angles, and a
causal mask aligned to the bottom right): a prompt with P = 0 and then one
token at a time gives stlm's logits. Feed the presents back as the next pasts.

T5 family: the three graphs transformers-style runtimes expect.

    encoder.onnx            input_ids (B, S), attention_mask (B, S) -> encoder_hidden_states (B, S, D)
    decoder.onnx            decoder_input_ids (B, L), encoder_hidden_states, encoder_attention_mask (B, S)
                            -> logits (B, L, V), present_key.{i}, present_value.{i} (B, H, L, Dh),
                               cross_key.{i}, cross_value.{i} (B, H, S, Dh)
    decoder_with_past.onnx  decoder_input_ids (B, 1), encoder_attention_mask, past_key.{i}, past_value.{i}
                            (B, H, P, Dh), cross_key.{i}, cross_value.{i}
                            -> logits (B, 1, V), present_key.{i}, present_value.{i} (B, H, P + 1, Dh)

The encoder's output is projected to cross-attention keys and values once, by
decoder.onnx; every later step reuses them. Graphs are traced from the
family's own modules (their attention, norms and position bias) with
torch's TorchScript-based ONNX exporter, opset 17, all sizes dynamic.

`onnx_meta.json` beside the graphs holds what a loop needs: special ids and
the cache shapes. `greedy_decoder` and `greedy_t5` are such loops, on ONNX
Runtime; the tests compare them with stlm's own generation.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlm.errors import UserError
from stlm.models.decoder import DecoderLM
from stlm.models.t5 import T5Model
from stlm.tokenizers import Tokenizer

OPSET = 17
META = "onnx_meta.json"


# --- decoder family -------------------------------------------------------------------------------


class DecoderWithPast(nn.Module):
    """`DecoderLM` with its cache as explicit inputs and outputs: (ids, *pasts) -> (logits, *presents)."""

    def __init__(self, model: DecoderLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, cfg = self.model, self.model.config
        b, t = ids.shape
        p = past[0].shape[2]
        positions = torch.arange(t, device=ids.device) + p  # (T,) absolute positions of the new tokens
        cos = m.rotary.cos[positions][None, :, None, :]  # (1, T, 1, Dh/2)
        sin = m.rotary.sin[positions][None, :, None, :]
        keys = torch.arange(p + t, device=ids.device)  # (P + T,)
        allowed = keys[None, :] <= positions[:, None]  # (T, P + T): query i sees keys 0 .. P + i
        x = m.embed(ids)  # (B, T, D)
        presents: list[torch.Tensor] = []
        for layer, block in enumerate(m.blocks):
            h = _rms_norm(x, block.attn_norm.weight, block.attn_norm.eps)
            qkv = block.attn.qkv(h).view(b, t, 3, cfg.n_heads, cfg.d_head)  # (B, T, 3, H, Dh)
            q, k, v = qkv.unbind(2)  # (B, T, H, Dh) each
            q = _rotate_half(q, cos, sin).transpose(1, 2)  # (B, H, T, Dh)
            k = torch.cat([past[2 * layer], _rotate_half(k, cos, sin).transpose(1, 2)], dim=2)  # (B, H, P + T, Dh)
            v = torch.cat([past[2 * layer + 1], v.transpose(1, 2)], dim=2)
            presents += [k, v]
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(cfg.d_head)  # (B, H, T, P + T)
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
            y = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, t, cfg.d_model)  # (B, T, D)
            x = x + block.attn.out(y)
            gate, up = block.mlp.gate_up(_rms_norm(x, block.mlp_norm.weight, block.mlp_norm.eps)).chunk(2, dim=-1)
            x = x + block.mlp.down(F.silu(gate) * up)
        logits = m.head(_rms_norm(x, m.norm.weight, m.norm.eps))  # (B, T, V)
        return (logits, *presents)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, Dh) rotated in stlm's half-split layout (dims i and i + Dh/2 pair)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _layer_names(prefix: str, n_layers: int) -> list[str]:
    return [f"{prefix}_{kind}.{i}" for i in range(n_layers) for kind in ("key", "value")]


def export_onnx_decoder(model: DecoderLM, tokenizer: Tokenizer, root: Path) -> None:
    """Write model.onnx and onnx_meta.json for a decoder into the folder `root`."""
    cfg = model.config
    pasts, presents = _layer_names("past", cfg.n_layers), _layer_names("present", cfg.n_layers)
    ids = torch.zeros(1, 2, dtype=torch.long)
    past = [torch.zeros(1, cfg.n_heads, 3, cfg.d_head) for _ in pasts]  # a non-empty past, so P stays symbolic
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
    axes.update({name: {0: "batch", 2: "past"} for name in pasts})
    axes.update({name: {0: "batch", 2: "past_and_new"} for name in presents})
    _export(
        DecoderWithPast(model), (ids, *past), root / "model.onnx", ["input_ids", *pasts], ["logits", *presents], axes
    )
    _write_meta(
        root,
        family="decoder",
        tokenizer=tokenizer,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        vocab_size=cfg.vocab_size,
        max_len=cfg.max_seq_len,
    )


# --- T5 family ------------------------------------------------------------------------------------


class T5Encoder(nn.Module):
    def __init__(self, model: T5Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(input_ids, attention_mask)  # (B, S, D)


class T5Decoder(nn.Module):
    """First decoder call: projects the encoder output for cross-attention and returns it with the cache."""

    def __init__(self, model: T5Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cross_k, cross_v, cross_mask = self.model._cross_memory(memory, mask, memory.dtype)
        cross = [t for pair in zip(cross_k, cross_v) for t in pair]
        logits, *presents = _t5_step(self.model, ids, None, cross, cross_mask)
        return (logits, *presents, *cross)


class T5DecoderWithPast(nn.Module):
    """Later decoder calls: new ids after the cached ones, cross-attention keys and values given."""

    def __init__(self, model: T5Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = 2 * len(self.model.decoder)
        past, cross = list(caches[:n]), list(caches[n:])
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        cross_mask = torch.zeros(keep.shape, dtype=cross[0].dtype).masked_fill(~keep, torch.finfo(cross[0].dtype).min)
        return _t5_step(self.model, ids, past, cross, cross_mask)


def _t5_step(
    model: T5Model,
    ids: torch.Tensor,
    past: list[torch.Tensor] | None,
    cross: list[torch.Tensor],
    cross_mask: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Decoder ids (B, T) after `past` (per layer k, v (B, H, P, Dh); None: P = 0) -> (logits, *presents).

    The decoder blocks' own modules, with the cache concatenated instead of preallocated.
    """
    cfg = model.config
    b, t = ids.shape
    offset = 0 if past is None else past[0].shape[2]
    self_mask = model._causal_mask(t, offset, torch.float32)  # (1, H, T, P + T)
    x = model.embed(ids)  # (B, T, D)
    presents: list[torch.Tensor] = []
    for layer, blk in enumerate(model.decoder):
        h = blk.attn_norm(x)
        q, k, v = blk.attn.qkv(h).view(b, t, 3, cfg.n_heads, cfg.d_head).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        if past is not None:
            k = torch.cat([past[2 * layer], k], dim=2)  # (B, H, P + T, Dh)
            v = torch.cat([past[2 * layer + 1], v], dim=2)
        presents += [k, v]
        scores = torch.matmul(q, k.transpose(-1, -2)) + self_mask  # (B, H, T, P + T), T5: no 1/sqrt(Dh)
        y = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, t, -1)  # (B, T, I)
        x = x + blk.attn.out(y)
        h = blk.cross_norm(x)
        q = blk.cross.q(h).view(b, t, cfg.n_heads, cfg.d_head).transpose(1, 2)  # (B, H, T, Dh)
        scores = torch.matmul(q, cross[2 * layer].transpose(-1, -2)) + cross_mask  # (B, H, T, S)
        y = torch.matmul(scores.softmax(-1), cross[2 * layer + 1]).transpose(1, 2).reshape(b, t, -1)
        x = x + blk.cross.out(y)
        x = x + blk.ff(blk.ff_norm(x))
    x = model.decoder_norm(x)
    logits = F.linear(x * cfg.d_model**-0.5, model.embed.weight) if model.head is None else model.head(x)
    return (logits, *presents)


def export_onnx_t5(model: T5Model, tokenizer: Tokenizer, root: Path) -> None:
    """Write encoder.onnx, decoder.onnx, decoder_with_past.onnx and onnx_meta.json into the folder `root`."""
    cfg = model.config
    n = cfg.n_decoder_layers
    assert n is not None
    src = torch.ones(1, 4, dtype=torch.long)
    mask = torch.ones(1, 4, dtype=torch.long)
    batch_src = {0: "batch", 1: "source"}
    _export(
        T5Encoder(model),
        (src, mask),
        root / "encoder.onnx",
        ["input_ids", "attention_mask"],
        ["encoder_hidden_states"],
        {"input_ids": batch_src, "attention_mask": batch_src, "encoder_hidden_states": batch_src},
    )
    memory = torch.zeros(1, 4, cfg.d_model)
    presents, cross = _layer_names("present", n), _layer_names("cross", n)
    axes: dict[str, dict[int, str]] = {
        "decoder_input_ids": {0: "batch", 1: "target"},
        "encoder_hidden_states": batch_src,
        "encoder_attention_mask": batch_src,
        "logits": {0: "batch", 1: "target"},
    }
    axes.update({name: {0: "batch", 2: "target"} for name in presents})
    axes.update({name: {0: "batch", 2: "source"} for name in cross})
    # Traced with 2 target tokens: the causal triangle is part of the graph.
    _export(
        T5Decoder(model),
        (torch.zeros(1, 2, dtype=torch.long), memory, mask),
        root / "decoder.onnx",
        ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
        ["logits", *presents, *cross],
        axes,
    )
    pasts = _layer_names("past", n)
    past = [torch.zeros(1, cfg.n_heads, 3, cfg.d_head) for _ in pasts]
    cross_t = [torch.zeros(1, cfg.n_heads, 4, cfg.d_head) for _ in cross]
    axes = {"decoder_input_ids": {0: "batch"}, "encoder_attention_mask": batch_src, "logits": {0: "batch"}}
    axes.update({name: {0: "batch", 2: "past"} for name in pasts})
    axes.update({name: {0: "batch", 2: "source"} for name in cross})
    axes.update({name: {0: "batch", 2: "past_and_new"} for name in presents})
    _export(
        T5DecoderWithPast(model),
        (torch.zeros(1, 1, dtype=torch.long), mask, *past, *cross_t),
        root / "decoder_with_past.onnx",
        ["decoder_input_ids", "encoder_attention_mask", *pasts, *cross],
        ["logits", *presents],
        axes,
    )
    _write_meta(
        root,
        family="t5",
        tokenizer=tokenizer,
        n_layers=n,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        vocab_size=cfg.vocab_size,
        decoder_start_id=cfg.decoder_start_id,
    )


# --- shared ---------------------------------------------------------------------------------------


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> None:
    module = module.eval().float().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about traced shapes it keeps symbolic.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _write_meta(root: Path, *, family: str, tokenizer: Tokenizer, **shape: Any) -> None:
    meta = {
        "family": family,
        "pad_id": tokenizer.pad_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        "tokenizer": tokenizer.name,
        **shape,
    }
    (root / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _meta(root: Path) -> dict[str, Any]:
    path = root / META
    if not path.is_file():
        raise UserError(f"{root} has no {META}: not a folder `stlm export --format onnx` wrote")
    return json.loads(path.read_text(encoding="utf-8"))


def greedy_decoder(root: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy new ids for one prompt (BOS included) with ONNX Runtime on `model.onnx`; stops at EOS."""
    meta = _meta(root)
    session = _session(root / "model.onnx")
    empty = np.zeros((1, meta["n_heads"], 0, meta["d_head"]), dtype=np.float32)
    past = dict.fromkeys(_layer_names("past", meta["n_layers"]), empty)
    ids = np.array([prompt], dtype=np.int64)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits, *presents = session.run(None, {"input_ids": ids, **past})
        token = int(logits[0, -1].argmax())
        if token == meta["eos_id"]:
            break
        out.append(token)
        past = dict(zip(past, presents))
        ids = np.array([[token]], dtype=np.int64)
    return out


def greedy_t5(root: Path, source: list[int], max_new_tokens: int) -> list[int]:
    """Greedy target ids for one source (EOS included) with ONNX Runtime on the three T5 graphs."""
    meta = _meta(root)
    n = meta["n_layers"]
    encoder, decoder = _session(root / "encoder.onnx"), _session(root / "decoder.onnx")
    with_past = _session(root / "decoder_with_past.onnx")
    ids = np.array([source], dtype=np.int64)
    mask = np.ones_like(ids)
    (memory,) = encoder.run(None, {"input_ids": ids, "attention_mask": mask})
    step = np.array([[meta["decoder_start_id"]]], dtype=np.int64)
    logits, *caches = decoder.run(
        None, {"decoder_input_ids": step, "encoder_hidden_states": memory, "encoder_attention_mask": mask}
    )
    past, cross = caches[: 2 * n], caches[2 * n :]
    names_past, names_cross = _layer_names("past", n), _layer_names("cross", n)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        if token == meta["eos_id"]:
            break
        out.append(token)
        feeds = {"decoder_input_ids": np.array([[token]], dtype=np.int64), "encoder_attention_mask": mask}
        feeds.update(zip(names_past, past))
        feeds.update(zip(names_cross, cross))
        logits, *past = with_past.run(None, feeds)
    return out
