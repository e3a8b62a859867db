"""Span corruption as a training task for encoder-decoders (T5, ByT5).

Raw windows of `raw_length` tokens come from the seeded window loader; each is
corrupted into an encoder input of `inputs_length` and a target of
`targets_length` (512 -> 114 at T5's settings). The noise masks of a step are
drawn from a generator keyed by (seed, step, micro-batch), so a resumed run
corrupts exactly as an uninterrupted one. Validation corrupts the first
validation windows with a fixed key and reports their mean loss per target token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stlm.config import RunConfig
from stlm.errors import UserError
from stlm.objectives.seq2seq import seq2seq_loss
from stlm.objectives.span_corruption import SpanLengths, corrupt, noise_mask, span_lengths

_VALIDATION_KEY = (2**31 - 1,)


@dataclass
class SpanCorruptionTask:
    lengths: SpanLengths
    sentinel_ids: list[int]
    eos_id: int
    pad_id: int
    name: str = "span-corruption"

    @classmethod
    def create(cls, cfg: RunConfig, tokenizer) -> SpanCorruptionTask:
        try:
            lengths = span_lengths(cfg.data.seq_len, cfg.objective.noise_density, cfg.objective.mean_span)
        except ValueError as exc:
            raise UserError(f"span corruption with seq_len {cfg.data.seq_len}: {exc}") from None
        sentinels = [tokenizer.sentinel_id(k) for k in range(lengths.n_spans)]
        return cls(lengths=lengths, sentinel_ids=sentinels, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)

    @property
    def window_len(self) -> int:
        return self.lengths.raw_length

    def _corrupt(self, windows: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        masks = np.stack(
            [noise_mask(self.lengths.raw_length, self.lengths.n_noise, self.lengths.n_spans, rng) for _ in windows]
        )  # (B, raw)
        inputs, targets = corrupt(windows, masks, self.sentinel_ids, self.eos_id)  # (B, S), (B, L)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def batch(self, windows: torch.Tensor, key: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        return self._corrupt(windows.numpy(), np.random.default_rng(list(key)))

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        inputs, targets = tensors
        return seq2seq_loss(model, inputs, targets, pad_id=self.pad_id, decoder_start_id=self.pad_id)

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return sum(t.numel() for t in tensors), 0

    @torch.inference_mode()
    def validate(self, model, val, *, max_tokens, batch_size, device, autocast) -> dict[str, float]:
        raw = self.lengths.raw_length
        n_windows = max(1, min(len(val), max_tokens or len(val)) // raw)
        if len(val) < raw:
            raise UserError(f"the validation split ({len(val)} tokens) is shorter than one span-corruption window ({raw})")
        windows = np.asarray(val[: n_windows * raw], dtype=np.int64).reshape(n_windows, raw)
        inputs, targets = self._corrupt(windows, np.random.default_rng(list(_VALIDATION_KEY)))
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for i in range(0, n_windows, batch_size):
                x, y = inputs[i : i + batch_size].to(device), targets[i : i + batch_size].to(device)
                with autocast:
                    loss = seq2seq_loss(model, x, y, pad_id=self.pad_id, decoder_start_id=self.pad_id)
                n = int((y != self.pad_id).sum())
                total += float(loss) * n
                count += n
        finally:
            model.train(was_training)
        return {"val_loss": total / count, "val_tokens": count}
