"""Soft labels for classification: a distribution over the labels as the training target.

A classification target is a label's tokens followed by EOS. A training row may
instead give every label a probability (`probs`, e.g. an ensemble's posterior
from `stlm classify`). The sequence the model is trained on still follows one
label, the row's target (by default its most probable label); at each position
along it where labels part ways, the target becomes the probability of each next
token among the labels that share the prefix so far:

    probs: data types 0.5, debugging 0.3, gui 0.2        path: "data types"
    position 0   'd' 0.8 (data types + debugging), 'g' 0.2
    position 1   'a' 0.625, 'e' 0.375                    (given "d")
    position 2+  one label left: the ordinary next-token target

So the label posterior is spread over the label's tokens along the path; where
only one label continues, the term is the hard cross-entropy. A row whose label
has probability 1 trains exactly as a hard-labelled row does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from stlm.finetune.examples import Example
from stlm.finetune.format import TextToText, cut_utf8
from stlm.objectives.next_token import IGNORE_INDEX


@dataclass
class SoftLabels:
    """`fmt`'s batches and loss with soft label targets where an example has `probs` (an `Objective`).

    Batches carry two more tensors: soft points (N, 3) as (row, offset from the
    row's first target position, token id) and their probabilities (N,).
    """

    fmt: TextToText
    # Every epoch batches the same examples again: their soft points and the labels' ids are worked out once.
    _ids: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _points: dict[Example, list[tuple[int, int, float]]] = field(default_factory=dict, init=False, repr=False)

    def target_ids(self, text: str) -> list[int]:
        """A target's ids as `fmt.batch` encodes them (cut to max_target_bytes, EOS last)."""
        if text not in self._ids:
            self._ids[text] = self.fmt.tokenizer.encode(cut_utf8(text, self.fmt.max_target_bytes), eos=True)
        return self._ids[text]

    def points(self, example: Example) -> list[tuple[int, int, float]]:
        """(offset, token id, probability) of the soft targets along `example`'s target."""
        if not example.probs:
            return []
        if example not in self._points:
            self._points[example] = self._trie_points(example)
        return self._points[example]

    def _trie_points(self, example: Example) -> list[tuple[int, int, float]]:
        path = self.target_ids(example.target)
        labels = [(self.target_ids(label), p) for label, p in example.probs]
        out: list[tuple[int, int, float]] = []
        for k in range(len(path)):
            nxt: dict[int, float] = {}
            for ids, p in labels:
                if len(ids) > k and ids[:k] == path[:k] and p > 0:
                    nxt[ids[k]] = nxt.get(ids[k], 0.0) + p
            total = sum(nxt.values())
            if total <= 0:  # no probability left on this path: the rest is the hard target
                break
            if len(nxt) > 1 or path[k] not in nxt:  # labels part ways here (or the path has no mass)
                out.extend((k, token, p / total) for token, p in sorted(nxt.items()))
        return out

    def batch(self, examples: Sequence[Example]) -> tuple[torch.Tensor, ...]:
        tensors = self.fmt.batch(examples)
        rows = [(row, k, token, p) for row, ex in enumerate(examples) for k, token, p in self.points(ex)]
        at = torch.tensor([r[:3] for r in rows], dtype=torch.long).reshape(-1, 3)  # (N, 3)
        probs = torch.tensor([r[3] for r in rows], dtype=torch.float32)  # (N,)
        return (*tensors, at, probs)

    def loss(self, model: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        """Mean over target positions: soft cross-entropy where `at` names a position, hard elsewhere."""
        *base, at, probs = tensors
        logits, targets = self.fmt.logits_targets(model, *base)  # (B, T, V), (B, T)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        scored = targets != IGNORE_INDEX  # (B, T)
        nll = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * scored  # (B, T)
        if at.numel():
            first = scored.float().argmax(dim=1)  # (B,) each row's first target position
            row, pos = at[:, 0], first[at[:, 0]] + at[:, 1]  # (N,), (N,)
            nll = nll.index_put((row, pos), torch.zeros_like(probs))  # the soft term replaces the hard one
            nll = nll.index_put((row, pos), -probs * logp[row, pos, at[:, 2]], accumulate=True)
        return nll.sum() / scored.sum().clamp_min(1)

    def logits_targets(self, model: torch.nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fmt.logits_targets(model, *tensors[:-2])

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return self.fmt.counts(tensors[:-2])
