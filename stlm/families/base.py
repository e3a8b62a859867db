"""What a model family is and does: one row of the registry, one class each.

Everything that differs between families lives on its row, so no other code
asks which family it holds:

    built from      config class, model class, exact parameter count, presets, name grammar
    meets text      the tokenizer "auto" picks and the check a tokenizer must pass,
                    how a prompt and a (prompt, target) pair become ids and tensors
    trains          which objectives fit, the longest window, a hook before the first step
    generates       streamed sampling and batched greedy decoding with the family's cache,
                    rows that join and leave a running batch (`row_batch`, for servers),
                    int8 weights for CPU inference (`quantize`)
    is listed       its shape line in `stlm models` and, where it has one, a breakdown by part

`CausalFamily` holds what every decoder-only family shares (decoder, pooled);
the encoder-decoder T5 family overrides it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from stlm.config import coerce
from stlm.errors import UserError
from stlm.generation.quantize import quantize_linear_int8
from stlm.generation.rows import RowBatch
from stlm.generation.speculative import generate_speculative
from stlm.interop.formats import Exporter
from stlm.objectives.preference import sequence_logprobs
from stlm.objectives.prompted import pack_prompted, prompted_loss
from stlm.runtime import check_model_fits
from stlm.tokenizers import ByteTokenizer, Tokenizer, load_tokenizer


class ModelFamily:
    """One model family; subclasses fill in the class attributes and override behaviour."""

    name: ClassVar[str]
    config_cls: ClassVar[type]  # a dataclass with to_dict() / from_dict(); from_dict raises ValueError
    model_cls: ClassVar[Callable[[Any], nn.Module]]  # model_cls(config) -> an initialised model
    presets: ClassVar[Mapping[str, Any]]  # preset name -> config
    encoder_decoder: ClassVar[bool] = False
    objectives: ClassVar[tuple[str, ...]] = ("next-token",)  # pretraining objectives, the default first
    # Architecture settings a recipe or --set may change (model.<key>), beyond the preset.
    arch_keys: ClassVar[tuple[str, ...]] = ()
    # `stlm export` formats that hold this family's models, and why the others cannot.
    exports: ClassVar[Mapping[str, Exporter]] = {}
    export_note: ClassVar[str] = ""

    # --- built from -------------------------------------------------------------------------

    def count_params(self, cfg: Any) -> int:
        """Exact count from the config alone (tied weights once), no model built."""
        raise NotImplementedError

    def parse_name(self, name: str) -> Any | None:
        """Config for an open-ended name (t5-efficient-tiny-nl32); None when the name is not the family's."""
        return None

    def build(self, cfg: Any) -> nn.Module:
        """A freshly initialised model; one too large for the machine is refused before any tensor exists."""
        if torch.get_default_device().type != "meta":  # meta tensors take no memory
            self.check_fits(cfg)
        return self.model_cls(cfg)

    def check_fits(self, cfg: Any) -> None:
        """A UserError giving the size in GB when the model's weights alone would not fit in memory."""
        check_model_fits(self.count_params(cfg), f"this {self.name} model")

    def with_arch(self, cfg: Any, changes: Mapping[str, Any]) -> Any:
        """`cfg` with architecture settings changed (checked by the config's own __post_init__)."""
        unknown = sorted(set(changes) - set(self.arch_keys))
        if unknown:
            raise UserError(
                f"model.{unknown[0]} is not a {self.name} setting that can be changed; "
                f"settable: {', '.join('model.' + k for k in self.arch_keys)}"
            )
        # Values from --set arrive as strings; each is read as its field's type ("128" -> 128).
        hints = typing.get_type_hints(self.config_cls)
        typed = {key: coerce(value, hints[key], f"model.{key}", "model settings") for key, value in changes.items()}
        try:
            return dataclasses.replace(cfg, **_rederived(cfg, typed), **typed)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad {self.name} model setting: {exc}") from None

    def exporter(self, fmt: str) -> Exporter:
        """The writer of format `fmt` for this family; a UserError naming the formats it has otherwise."""
        if fmt not in self.exports:
            have = f"export to {', '.join(sorted(self.exports))} only" if self.exports else "export to no format"
            raise UserError(f"{self.name} models cannot be exported as {fmt}: they {have} ({self.export_note})")
        return self.exports[fmt]

    # --- is listed ---------------------------------------------------------------------------

    def describe(self, cfg: Any) -> str:
        """The one-line shape `stlm models` prints."""
        raise NotImplementedError

    def breakdown(self, cfg: Any) -> dict[str, Any] | None:
        """Parameters by part and what each sharing option saves, where the family has parts."""
        return None

    # --- meets text ---------------------------------------------------------------------------

    def default_tokenizer(self, cfg: Any) -> str:
        """The tokenizer spec "auto" resolves to for this config (a UserError if none fits)."""
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: Tokenizer, spec: str, cfg: Any) -> Tokenizer:
        """The tokenizer, if the model's vocabulary fits it; a UserError otherwise."""
        raise NotImplementedError

    def bpe_vocab_size(self, cfg: Any) -> int | None:
        """The size of BPE this config needs fitted because "auto" has none for it (a token preset), else None."""
        return None

    def resolve_tokenizer(self, spec: str, cfg: Any) -> Tokenizer:
        """The tokenizer a run uses: named, or chosen from the family ("auto"), and checked."""
        if spec == "auto":
            spec = self.default_tokenizer(cfg)
        return self.check_tokenizer(load_tokenizer(spec), spec, cfg)

    def max_len(self, cfg: Any) -> int | None:
        """The longest sequence the model takes; None when positions are relative (no limit)."""
        return None

    def prompt_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """The ids generation and scoring condition on."""
        raise NotImplementedError

    def pair_tensors(self, tokenizer: Tokenizer, pairs: Sequence[tuple[str, list[int]]]) -> tuple[torch.Tensor, ...]:
        """Model-ready tensors (CPU) for (prompt text, target ids) pairs, the target ending in EOS."""
        raise NotImplementedError

    def pair_loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the target ids of `pair_tensors`."""
        raise NotImplementedError

    def pair_logits(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) of `pair_tensors` and their targets (B, T), -100 where not scored."""
        raise NotImplementedError

    def n_target_tokens(self, tokenizer: Tokenizer, tensors: tuple[torch.Tensor, ...]) -> int:
        """Target ids `pair_loss` averages over."""
        raise NotImplementedError

    def pair_logprobs(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed log-prob of each row's target ids (B,), target ids per row (B,)) of `pair_tensors`."""
        raise NotImplementedError

    # --- trains ------------------------------------------------------------------------------

    def check_objective(self, objective: str, model_name: str) -> None:
        if objective not in self.objectives:
            raise UserError(self._wrong_objective(objective, model_name))

    def _wrong_objective(self, objective: str, model_name: str) -> str:
        return (
            f"{objective} does not train {self.name} models such as {model_name}; use --objective {self.objectives[0]}"
        )

    def for_objective(self, cfg: Any, objective: str) -> Any:
        """The model config a new run of `objective` builds (mtp:K adds K-1 heads on causal families)."""
        return cfg

    def before_training(self, model: nn.Module, train_ids: np.ndarray) -> str | None:
        """A hook run once on a new run before its first step; returns a line to print, or None."""
        return None

    # --- generates ---------------------------------------------------------------------------

    def stream(self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, **sampling: Any) -> Iterator[int]:
        """New token ids for a prompt (`sampling`: max_new_tokens, temperature, top_k, top_p, seed, num_beams).

        num_beams > 1 asks for beam search, which only encoder-decoders offer;
        the others raise a UserError for it.
        """
        raise NotImplementedError

    def generate_greedy(
        self, model: nn.Module, prompts: list[list[int]], *, eos_id: int, max_new_tokens: int
    ) -> list[list[int]]:
        """Greedy new ids for several prompts, each what `stream(..., temperature=0)` gives it alone."""
        return [
            list(self.stream(model, prompt, eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=0.0))
            for prompt in prompts
        ]

    def row_batch(self, model: nn.Module) -> RowBatch | None:
        """An empty batch that rows join and leave between steps (`stlm.generation.rows`), for a
        server's continuous batching; None where the family's cache cannot hold rows at different
        positions, and its rows decode one by one with `stream`."""
        return None

    def quantize(self, model: nn.Module, mode: str) -> nn.Module:
        """The model for CPU inference with its weights as `mode` says (a value of
        `stlm.runtime.QUANTIZE`): none returns it as it is; int8 replaces every Linear in
        place (`stlm.generation.quantize`). Generation and scoring then run as before."""
        if mode == "none":
            return model
        if mode != "int8":
            raise UserError(f"unknown quantize {mode!r}; use none or int8")
        return quantize_linear_int8(model)

    def stream_speculative(
        self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, max_new_tokens: int, stats: Any = None
    ) -> Iterator[int]:
        """Greedy new ids drafted by the model's multi-token heads (`stlm.generation.speculative`),
        the ids `stream(..., temperature=0)` gives; `stats` (a SpeculativeStats) is filled in."""
        raise UserError(
            f"speculative decoding drafts with the multi-token heads of decoder-only models; a {self.name} model "
            "has none: drop --speculative"
        )

    def __repr__(self) -> str:
        return f"<model family {self.name}>"


class CausalFamily(ModelFamily):
    """Decoder-only families: they continue BOS + prompt, and train on next-token prediction.

    A (prompt, target) pair is one sequence, loss on the target only:
        ids = BOS prompt... target... EOS
    """

    encoder_decoder = False

    def default_tokenizer(self, cfg: Any) -> str:
        if cfg.vocab_size != ByteTokenizer.vocab_size:
            raise UserError(
                f"this {self.name} model has a vocabulary of {cfg.vocab_size} ids, not the byte tokenizer's "
                f"{ByteTokenizer.vocab_size}: pass --tokenizer bpe:PATH/tokenizer.json "
                f"(make one with `stlm train-tokenizer --vocab-size {cfg.vocab_size} --out PATH/tokenizer.json`)"
            )
        return "byte"

    def check_tokenizer(self, tokenizer: Tokenizer, spec: str, cfg: Any) -> Tokenizer:
        # Decoder-only models must have exactly the tokenizer's ids (a BPE of 4096 ids for bpe-10m).
        n_tok, n_model = tokenizer.vocab_size, cfg.vocab_size
        if n_tok != n_model:
            hint = (
                f"; train a BPE of that size with `stlm train-tokenizer --vocab-size {n_model} --out PATH/tokenizer.json`"
                if n_model != ByteTokenizer.vocab_size
                else "; this model reads bytes: use --tokenizer byte (or auto)"
            )
            raise UserError(
                f"tokenizer {spec} has {n_tok} ids but the {self.name} model's vocab_size is {n_model}; they must agree{hint}"
            )
        return tokenizer

    def bpe_vocab_size(self, cfg: Any) -> int | None:
        return None if cfg.vocab_size == ByteTokenizer.vocab_size else cfg.vocab_size

    def max_len(self, cfg: Any) -> int | None:
        return cfg.max_seq_len  # rotary tables have a length

    def prompt_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        return tokenizer.encode(text, bos=True)

    def pair_tensors(self, tokenizer: Tokenizer, pairs: Sequence[tuple[str, list[int]]]) -> tuple[torch.Tensor, ...]:
        return pack_prompted([(tokenizer.encode(ctx, bos=True), tgt) for ctx, tgt in pairs], pad_id=tokenizer.pad_id)

    def pair_loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        inputs, labels = tensors
        return prompted_loss(model, inputs, labels)

    def pair_logits(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = tensors
        return model(inputs), labels  # (B, T, V), (B, T)

    def n_target_tokens(self, tokenizer: Tokenizer, tensors: tuple[torch.Tensor, ...]) -> int:
        return int((tensors[1] != -100).sum())

    def pair_logprobs(self, model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = tensors
        return sequence_logprobs(model(inputs), labels)  # (B, T, V) logits; the prompt's labels are -100

    # The model's cache verifies several drafted ids in one forward and rolls back (KVCache.truncate);
    # False: one id per step (see stlm.generation.speculative).
    chunked_speculation: ClassVar[bool] = True

    def stream_speculative(
        self, model: nn.Module, prompt_ids: list[int], *, eos_id: int, max_new_tokens: int, stats: Any = None
    ) -> Iterator[int]:
        return generate_speculative(
            model,
            prompt_ids,
            max_new_tokens=max_new_tokens,
            stop_ids=(eos_id,),
            chunked=self.chunked_speculation,
            stats=stats,
        )

    def _sampling(self, sampling: dict[str, Any]) -> dict[str, Any]:
        """`sampling` without num_beams, which a causal model accepts only as 1 (no beam search)."""
        num_beams = sampling.pop("num_beams", 1)
        if num_beams != 1:
            raise UserError(
                f"beam search (num_beams {num_beams}) is for encoder-decoders; a {self.name} model samples "
                "or decodes greedily (num_beams 1)"
            )
        return sampling

    def check_objective(self, objective: str, model_name: str) -> None:
        # mtp:K (multi-token prediction; K checked by ObjectiveConfig) trains every causal family.
        if not objective.startswith("mtp:"):
            super().check_objective(objective, model_name)

    def for_objective(self, cfg: Any, objective: str) -> Any:
        if not objective.startswith("mtp:"):
            return cfg
        return dataclasses.replace(cfg, mtp_heads=int(objective[len("mtp:") :]) - 1)

    def _wrong_objective(self, objective: str, model_name: str) -> str:
        if objective == "span-corruption":
            return (
                f"span corruption trains encoder-decoders; model {model_name} is a {self.name} model (use next-token)"
            )
        return super()._wrong_objective(objective, model_name)


def _rederived(cfg: Any, changes: Mapping[str, Any]) -> dict[str, None]:
    """Fields the preset left to be derived (None -> computed in __post_init__), to derive again.

    A preset's d_ff was computed from its d_model; after `model.d_model=96` it must
    follow the new width, unless the preset (or the change) set it explicitly. A
    field counts as derived when clearing it gives back the same config.
    """
    out: dict[str, None] = {}
    for f in dataclasses.fields(cfg):
        if not f.init or f.default is not None or f.name in changes or getattr(cfg, f.name) is None:
            continue
        try:
            derived = getattr(dataclasses.replace(cfg, **{f.name: None}), f.name)
        except (TypeError, ValueError):
            continue
        if derived == getattr(cfg, f.name):
            out[f.name] = None
    return out
