"""How a text-to-text example meets each model family: batches, loss, generation.

    encoder-decoder (t5)                      decoder / pooled (causal)
    encoder  = input... EOS                   ids = BOS input... SEP target... EOS
    decoder  = [start] target... -> target... EOS    loss on target... EOS only

Inputs are cut to `max_input_bytes` (whole characters) and training targets to
`max_target_bytes`; a causal model also needs BOS + input + SEP + target + EOS
to fit its context, so its input is cut further when the target is long. The
prompt text a causal model sees is `input + separator`; scoring labels and
generating use exactly that prompt, so training and evaluation agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stlm.families import ModelFamily
from stlm.finetune.examples import Example


def as_channel(examples: Sequence[Example]) -> list[Example]:
    """Classification examples turned around for a channel model: it reads the label (stripped, as the
    label set holds it) and learns the input."""
    return [Example(ex.target.strip(), ex.input, ex.where) for ex in examples]


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits `max_bytes` (never half a character)."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


def utf8_windows(text: str, max_bytes: int) -> list[str]:
    """`text` as consecutive pieces of at most `max_bytes` UTF-8 bytes each (whole characters) that join
    back to it: one piece when it fits, the empty text included. A character wider than `max_bytes`
    is a piece of its own."""
    pieces, start = [], 0
    while True:
        # A character is at least one byte, so max_bytes characters hold every byte a window can take:
        # each step encodes one window's worth of text, not the whole rest.
        ahead = text[start : start + max_bytes]
        piece = cut_utf8(ahead, max_bytes) or ahead[:1]
        pieces.append(piece)
        start += len(piece)
        if start >= len(text):
            return pieces


@dataclass
class TextToText:
    """One family's view of examples: prompts, batches, loss and greedy outputs.

    Its `loss` and `counts` make it an objective the shared training step takes
    (`stlm.objectives.base.Objective`), as the pretraining objectives are.
    """

    family: ModelFamily  # a registry row: how a (prompt, target) pair meets the model
    tokenizer: Any
    separator: str
    max_input_bytes: int
    max_target_bytes: int
    max_len: int | None  # causal models: the longest sequence the model takes (its max_seq_len)

    @property
    def causal(self) -> bool:
        return not self.family.encoder_decoder

    def context(self, text: str) -> str:
        """What the model is conditioned on: the encoder input, or the causal prompt (input + separator)."""
        text = cut_utf8(text, self.max_input_bytes)
        if not self.causal:
            return text
        if self.max_len is not None:
            # BOS + input + separator + (room for a target of max_target_bytes + EOS) must fit.
            room = self.max_len + 1 - 2 - len(self.separator.encode("utf-8")) - self.max_target_bytes
            text = cut_utf8(text, max(0, room))
        return text + self.separator

    def batch(self, examples: Sequence[Example]) -> tuple[torch.Tensor, ...]:
        """Model-ready tensors for a list of examples (CPU)."""
        tok = self.tokenizer
        pairs = [
            (self.context(ex.input), tok.encode(cut_utf8(ex.target, self.max_target_bytes), eos=True))
            for ex in examples
        ]
        return self.family.pair_tensors(tok, pairs)

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        return self.family.pair_loss(model, *tensors)

    def logits_targets(self, model: torch.nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and targets (B, T), -100 where not scored (what distillation compares)."""
        return self.family.pair_logits(model, *tensors)

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        """(target tokens, 0): what the training step counts for throughput (`objectives.base.Objective`)."""
        return self.n_target_tokens(tensors), 0

    def n_target_tokens(self, tensors: tuple[torch.Tensor, ...]) -> int:
        """Target ids the loss averages over (labels != -100, or non-pad targets)."""
        return self.family.n_target_tokens(self.tokenizer, tensors)

    def prompt_ids(self, text: str) -> list[int]:
        """The ids generation starts from: BOS + causal prompt, or encoder input + EOS."""
        return self.family.prompt_ids(self.tokenizer, self.context(text))

    def generate(self, model: torch.nn.Module, text: str, max_new_tokens: int) -> str:
        """Greedy output for one input, without the EOS that ends it."""
        tok = self.tokenizer
        prompt = self.prompt_ids(text)
        if self.causal and self.max_len is not None:
            max_new_tokens = max(1, min(max_new_tokens, self.max_len - len(prompt) + 1))
        stream = self.family.stream(model, prompt, eos_id=tok.eos_id, max_new_tokens=max_new_tokens, temperature=0.0)
        return tok.decode([t for t in stream if t != tok.eos_id])

    def generate_many(self, model: torch.nn.Module, prompts: Sequence[list[int]], max_new_tokens: int) -> list[str]:
        """Greedy outputs for several prompts (`prompt_ids` of each input) generated as one batch,
        each what `generate` gives that input.

        `generate` caps a causal prompt's new tokens at the room left in
        max_len (the model's max_seq_len); the batched loops apply that same
        context rule to each row themselves.
        """
        tok = self.tokenizer
        outputs = self.family.generate_greedy(model, list(prompts), eos_id=tok.eos_id, max_new_tokens=max_new_tokens)
        return [tok.decode([t for t in ids if t != tok.eos_id]) for ids in outputs]
