"""Span corruption: T5's pretraining objective, on packed token windows.

A raw window of corpus tokens is split into alternating kept and noise spans,
starting with a kept span and ending with a noise span. Each noise span is
replaced in the input by one sentinel, and the target spells out every noise
span after its sentinel:

    window   [a b c d e f g h i j]          noise spans: (c d) and (h i j)
    inputs   [a b <X0> e f g <X1> EOS]
    targets  [<X0> c d <X1> h i j EOS]

`<Xk>` is the tokenizer's `<extra_id_k>`, counted down from the top of the
vocabulary. With the standard settings (noise density 0.15, mean noise span
3) a raw window of 568 tokens holds 85 noise tokens in 28 spans and gives
inputs of exactly 512 (483 kept + 28 sentinels + EOS) and targets of exactly
114 (85 + 28 sentinels + EOS), so batches need no padding.

Span lengths are a uniformly random segmentation of the noise tokens into
n_spans non-empty spans, and of the kept tokens likewise (not geometric
lengths), as in T5's `random_spans_noise_mask`. Windows are cut from shards
packed `doc EOS doc EOS ...`; an EOS inside a window is an ordinary token that
may be kept or masked, as in T5.

Resuming: the mask of a window depends only on (seed, loader epoch, the
window's position in that epoch's order), so the WindowLoader's state is the
whole state and a resumed run corrupts exactly as an uninterrupted one.

`SpanCorruptionObjective` (at the end) is span corruption as the training
loop's objective (objectives/base.py): batch format, seq2seq loss, validation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stlm.config import ObjectiveConfig
from stlm.errors import UserError
from stlm.objectives.seq2seq import seq2seq_logits, seq2seq_loss

if TYPE_CHECKING:  # only a type: objectives take a loader, they need not import the data layer
    from stlm.data.loader import WindowLoader

# Mixed into every per-window seed so the corruption stream can never equal
# the loader's own stream, which is seeded with [seed, epoch].
_STREAM = 0x5350414E  # "SPAN"


@dataclass(frozen=True)
class SpanLengths:
    """Token counts of one span-corruption example."""

    raw_length: int  # corpus tokens drawn per example (568 for T5's 512)
    n_noise: int  # of those, tokens masked out (85)
    n_spans: int  # noise spans = kept spans = sentinels per example (28)
    inputs_length: int  # kept + one sentinel per span + EOS (512)
    targets_length: int  # noise + one sentinel per span + EOS (114)

    @property
    def n_kept(self) -> int:
        return self.raw_length - self.n_noise


def span_lengths(inputs_length: int = 512, noise_density: float = 0.15, mean_span: float = 3.0) -> SpanLengths:
    """The longest raw window whose corrupted input fits in `inputs_length`.

    Counts follow T5: noise = round(raw * density), spans = round(noise /
    mean_span), Python's round (half to even) throughout. Starting from
    `inputs_length - 1` raw tokens (corruption never lengthens a window by
    more than its EOS), the raw length grows while the next one still fits.
    The resulting `inputs_length` is one below the request when no raw length
    lands on it exactly (one more raw token can add a span and a token at
    once); batches then are that long. T5 pads such inputs instead; its extra
    trim for noise density 0.5 is not copied, as lengths here are exact.
    """
    if not 0.0 < noise_density < 1.0:
        raise UserError(f"noise density must be between 0 and 1 (exclusive), got {noise_density}")
    if mean_span < 1.0:
        raise UserError(f"the mean noise span must be at least 1 token, got {mean_span}")
    if inputs_length < 4:
        raise UserError(f"span corruption needs inputs of at least 4 tokens, got {inputs_length}")
    raw = inputs_length - 1
    while _lengths_of(raw + 1, noise_density, mean_span).inputs_length <= inputs_length:
        raw += 1
    return _lengths_of(raw, noise_density, mean_span)


def _lengths_of(raw: int, noise_density: float, mean_span: float) -> SpanLengths:
    # At least one noise token, one kept token and one span: no empty spans.
    n_noise = min(max(round(raw * noise_density), 1), raw - 1)
    n_spans = min(max(round(n_noise / mean_span), 1), n_noise, raw - n_noise)
    return SpanLengths(
        raw_length=raw,
        n_noise=n_noise,
        n_spans=n_spans,
        inputs_length=raw - n_noise + n_spans + 1,
        targets_length=n_noise + n_spans + 1,
    )


def noise_mask(length: int, n_noise: int, n_spans: int, rng: np.random.Generator) -> np.ndarray:
    """(length,) bool, True on noise: n_spans kept spans and n_spans noise spans, alternating.

    The first span is kept and the last is noise. Each group of tokens is cut
    into n_spans non-empty spans at n_spans - 1 distinct cut points drawn
    uniformly, which makes every such segmentation equally likely.
    """
    n_kept = length - n_noise
    if not 1 <= n_spans <= min(n_noise, n_kept):
        raise ValueError(f"cannot cut {n_noise} noise and {n_kept} kept tokens into {n_spans} non-empty spans each")
    noise_spans = _random_segmentation(n_noise, n_spans, rng)  # (n_spans,)
    kept_spans = _random_segmentation(n_kept, n_spans, rng)  # (n_spans,)
    interleaved = np.stack([kept_spans, noise_spans], axis=1).reshape(-1)  # (2 * n_spans,) kept, noise, ...
    is_noise = np.tile([False, True], n_spans)  # (2 * n_spans,)
    return np.repeat(is_noise, interleaved)  # (length,)


def _random_segmentation(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of n_segments non-empty pieces summing to n_items, uniformly at random."""
    cuts = np.sort(rng.choice(n_items - 1, size=n_segments - 1, replace=False)) + 1
    return np.diff(np.concatenate([[0], cuts, [n_items]]))


def corrupt(
    window: np.ndarray, mask: np.ndarray, sentinel_ids: Sequence[int], eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one window (T,) or a batch (B, T) under `mask` (same shape).

    inputs: the kept tokens with each noise span replaced by the next
    sentinel, then EOS. targets: each sentinel followed by its noise span,
    then EOS. `sentinel_ids[k]` is the id of `<extra_id_k>`. Any mask works
    for one window; the rows of a batch must share their counts of noise
    tokens and spans so that they stack (masks from `noise_mask` with one
    `SpanLengths` do). Both outputs are int64.
    """
    window = np.asarray(window)
    mask = np.asarray(mask, dtype=bool)
    if window.shape != mask.shape or window.ndim not in (1, 2):
        raise ValueError(f"window {window.shape} and mask {mask.shape} must be the same (T,) or (B, T) shape")
    if window.ndim == 1:
        inputs, targets = corrupt(window[None], mask[None], sentinel_ids, eos_id)
        return inputs[0], targets[0]

    batch = window.shape[0]
    prev = np.pad(mask[:, :-1], ((0, 0), (1, 0)))  # (B, T) was the previous token noise?
    starts = mask & ~prev  # (B, T) first token of each noise span
    n_spans = starts.sum(axis=1)  # (B,)
    n_noise = mask.sum(axis=1)  # (B,)
    if (n_spans != n_spans[0]).any() or (n_noise != n_noise[0]).any():
        raise ValueError("every row of a batch must have the same numbers of noise tokens and spans")
    n_spans, n_noise = int(n_spans[0]), int(n_noise[0])
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    if len(sentinels) < n_spans:
        raise UserError(
            f"span corruption needs {n_spans} sentinels per example and the tokenizer has "
            f"{len(sentinels)}: use a tokenizer with more sentinels or longer noise spans"
        )
    eos = np.full((batch, 1), eos_id, dtype=np.int64)

    # Inputs: a span's first token becomes its sentinel, the rest are dropped.
    span_index = np.cumsum(starts, axis=1) - 1  # (B, T) index of the current noise span, -1 before the first
    lookup = np.append(sentinels[:n_spans], 0)  # the extra entry keeps indexing valid when there is no noise
    tokens = np.where(starts, lookup[np.maximum(span_index, 0)], window.astype(np.int64))  # (B, T)
    kept = tokens[~(mask & prev)].reshape(batch, -1)  # (B, T - n_noise + n_spans)

    # Targets: noise token j of span k sits at j + k + 1 (k sentinels and
    # itself before it); sentinel k sits just before its span's first token.
    noise = window[mask].reshape(batch, n_noise).astype(np.int64)  # (B, n_noise)
    noise_starts = starts[mask].reshape(batch, n_noise)  # (B, n_noise)
    noise_span = np.cumsum(noise_starts, axis=1) - 1  # (B, n_noise)
    position = np.arange(n_noise) + noise_span + 1  # (B, n_noise)
    spelled = np.empty((batch, n_noise + n_spans), dtype=np.int64)  # (B, n_noise + n_spans)
    np.put_along_axis(spelled, position, noise, axis=1)
    sentinel_position = (position[noise_starts] - 1).reshape(batch, n_spans)  # (B, n_spans)
    np.put_along_axis(spelled, sentinel_position, np.broadcast_to(sentinels[:n_spans], (batch, n_spans)), axis=1)

    return np.concatenate([kept, eos], axis=1), np.concatenate([spelled, eos], axis=1)


def window_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator that masks the window at `position` of `epoch`'s order."""
    return np.random.default_rng([_STREAM, seed, epoch, position])


class SpanCorruptionBatcher:
    """Yields (inputs (B, inputs_length), targets (B, targets_length)) int64 tensors.

    Draws raw windows from `loader`, which must serve windows of
    `lengths.raw_length` tokens, i.e. be built with seq_len = raw_length - 1.
    `sentinel_ids[k]` is the tokenizer's `<extra_id_k>`. The loader's state
    is the only state: save and load it through this object or the loader.
    """

    def __init__(
        self,
        loader: WindowLoader,
        lengths: SpanLengths,
        sentinel_ids: Sequence[int],
        eos_id: int,
        seed: int,
    ) -> None:
        if loader.seq_len + 1 != lengths.raw_length:
            raise UserError(
                f"span corruption needs raw windows of {lengths.raw_length} tokens; the loader "
                f"serves {loader.seq_len + 1}: build it with seq_len={lengths.raw_length - 1}"
            )
        if len(sentinel_ids) < lengths.n_spans:
            raise UserError(
                f"span corruption needs {lengths.n_spans} sentinels per example and the tokenizer has "
                f"{len(sentinel_ids)}: use a tokenizer with more sentinels or longer noise spans"
            )
        if seed < 0:
            raise UserError(f"the span corruption seed must be a non-negative integer, got {seed}")
        self.loader = loader
        self.lengths = lengths
        self.sentinel_ids = np.asarray(sentinel_ids[: lengths.n_spans], dtype=np.int64)
        self.eos_id = int(eos_id)
        self.seed = int(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        windows = self.loader.next_batch().numpy()  # (B, raw_length)
        loader = self.loader
        # After the call, (epoch, index - step) is where this batch began;
        # this rank's windows sit at rank, rank + w, ... from there, exactly
        # the permutation positions the loader read.
        step = loader.batch_size * loader.world_size
        positions = loader.index - step + loader.rank + loader.world_size * np.arange(loader.batch_size)
        s = self.lengths
        masks = np.stack(
            [
                noise_mask(s.raw_length, s.n_noise, s.n_spans, window_rng(self.seed, loader.epoch, int(p)))
                for p in positions
            ]
        )  # (B, raw_length)
        inputs, targets = corrupt(windows, masks, self.sentinel_ids, self.eos_id)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


_VALIDATION_KEY = (2**31 - 1,)


@dataclass
class SpanCorruptionObjective:
    """Span corruption as a pretraining objective for encoder-decoders (T5, ByT5).

    Raw windows of `raw_length` ids from the seeded window loader are each
    corrupted into an encoder input and a target (512 -> 114 at T5's
    settings). A step's noise masks come from a generator keyed by (seed,
    step, micro-batch[, rank]), so a resumed run corrupts exactly as an
    uninterrupted one. Validation corrupts the first validation windows with
    a fixed key and reports their mean loss per target token.
    """

    lengths: SpanLengths
    sentinel_ids: list[int]
    eos_id: int
    pad_id: int
    name: str = "span-corruption"

    @classmethod
    def create(cls, cfg: ObjectiveConfig, seq_len: int, tokenizer: Any) -> SpanCorruptionObjective:
        try:
            lengths = span_lengths(seq_len, cfg.noise_density, cfg.mean_span)
        except ValueError as exc:
            raise UserError(f"span corruption with seq_len {seq_len}: {exc}") from None
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

    def logits_targets(self, model: torch.nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder logits (B, L, V) and targets (B, L), PAD not scored (what distillation compares)."""
        inputs, targets = tensors
        return seq2seq_logits(model, inputs, targets, pad_id=self.pad_id, decoder_start_id=self.pad_id)

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return sum(t.numel() for t in tensors), 0

    @torch.inference_mode()
    def validate(self, model, val, *, max_tokens, batch_size, device, autocast) -> dict[str, float]:
        raw = self.lengths.raw_length
        n_windows = max(1, min(len(val), max_tokens or len(val)) // raw)
        if len(val) < raw:
            raise UserError(
                f"the validation split ({len(val)} tokens) is shorter than one span-corruption window ({raw})"
            )
        windows = np.asarray(val[: n_windows * raw], dtype=np.int64).reshape(n_windows, raw)  # (N, raw)
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
