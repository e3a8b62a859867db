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

from stlm.finetune.examples import Example
from stlm.objectives.prompted import pack_prompted, prompted_loss
from stlm.objectives.seq2seq import seq2seq_loss


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits `max_bytes` (never half a character)."""
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", errors="ignore")


@dataclass
class TextToText:
    """One family's view of examples: prompts, batches, loss and greedy outputs."""

    family: str  # decoder | pooled | t5
    tokenizer: Any
    separator: str
    max_input_bytes: int
    max_target_bytes: int
    max_len: int | None  # causal models: the longest sequence the model takes (its max_seq_len)

    @property
    def causal(self) -> bool:
        return self.family != "t5"

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
        if self.causal:
            return pack_prompted([(tok.encode(ctx, bos=True), tgt) for ctx, tgt in pairs], pad_id=tok.pad_id)
        sources = [tok.encode(ctx, eos=True) for ctx, _ in pairs]
        inputs = _pad([s for s in sources], tok.pad_id)  # (B, S)
        mask = _pad([[1] * len(s) for s in sources], 0).bool()  # (B, S)
        targets = _pad([t for _, t in pairs], tok.pad_id)  # (B, L)
        return inputs, mask, targets

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        if self.causal:
            inputs, labels = tensors
            return prompted_loss(model, inputs, labels)
        inputs, mask, targets = tensors
        cfg = model.config
        return seq2seq_loss(
            model, inputs, targets, pad_id=cfg.pad_id, decoder_start_id=cfg.decoder_start_id, attention_mask=mask
        )

    def n_target_tokens(self, tensors: tuple[torch.Tensor, ...]) -> int:
        """Target ids the loss averages over (labels != -100, or non-pad targets)."""
        if self.causal:
            return int((tensors[1] != -100).sum())
        return int((tensors[2] != self.tokenizer.pad_id).sum())

    def prompt_ids(self, text: str) -> list[int]:
        """The ids generation starts from: BOS + causal prompt, or encoder input + EOS."""
        ctx = self.context(text)
        return self.tokenizer.encode(ctx, bos=True) if self.causal else self.tokenizer.encode(ctx, eos=True)

    def generate(self, model: torch.nn.Module, text: str, max_new_tokens: int) -> str:
        """Greedy output for one input, without the EOS that ends it."""
        from stlm.generation import stream

        tok = self.tokenizer
        prompt = self.prompt_ids(text)
        if self.causal and self.max_len is not None:
            max_new_tokens = max(1, min(max_new_tokens, self.max_len - len(prompt) + 1))
        ids = [
            t for t in stream(self.family, model, prompt, eos_id=tok.eos_id, max_new_tokens=max_new_tokens, temperature=0.0)
            if t != tok.eos_id
        ]
        return tok.decode(ids)

    def generate_many(self, model: torch.nn.Module, prompts: Sequence[list[int]], max_new_tokens: int) -> list[str]:
        """Greedy outputs for several prompts (`prompt_ids` of each input) generated as one batch,
        each what `generate` gives that input.

        `generate` caps a causal prompt's new tokens at the room left in
        max_len (the model's max_seq_len); the batched loops apply that same
        context rule to each row themselves.
        """
        from stlm.generation import generate_greedy

        tok = self.tokenizer
        outputs = generate_greedy(self.family, model, list(prompts), eos_id=tok.eos_id, max_new_tokens=max_new_tokens)
        return [tok.decode([t for t in ids if t != tok.eos_id]) for ids in outputs]


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
