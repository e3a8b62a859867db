"""Preference losses on whole answers: SPIN's self-play loss (a DPO loss whose loser is the model's own answer).

SPIN (Chen et al. 2024, arXiv 2401.01335) fine-tunes a model against its
previous self: the previous model (the frozen opponent, also the reference)
answers the fine-tuning prompts, and the new model learns to tell the human
answer y from its opponent's answer y':

    r(y)  = log p(y | x) - log p_ref(y | x)          implicit reward, nats (sum over the answer's ids)
    loss  = -log sigmoid(beta * [r(y) - r(y')])      per example, then the batch mean

The reference log-probs are fixed within an iteration, so they are computed
once (by the opponent, before training) and passed in as numbers. The
implicit-reward accuracy is how often r(y) > r(y') strictly (a tie, e.g. the
opponent reproducing the gold answer, is not a win).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stlm.objectives.next_token import IGNORE_INDEX


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(label) per row (B,), scored ids per row (B,)) for logits (B, T, V) and labels (B, T).

    Labels equal to -100 are not scored. Log-softmax in fp32 whatever the logits' dtype.
    """
    scored = labels != IGNORE_INDEX  # (B, T)
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (picked * scored).sum(dim=1), scored.sum(dim=1)


def implicit_rewards(
    policy_gold: torch.Tensor, policy_generated: torch.Tensor, ref_gold: torch.Tensor, ref_generated: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r(y), r(y')) per example (B,), each log p - log p_ref in nats (without beta)."""
    return policy_gold - ref_gold, policy_generated - ref_generated


def spin_loss(
    policy_gold: torch.Tensor,
    policy_generated: torch.Tensor,
    ref_gold: torch.Tensor,
    ref_generated: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """-log sigmoid(beta * [r(y) - r(y')]) per example (B,); every argument is a (B,) summed log-prob."""
    gold, generated = implicit_rewards(policy_gold, policy_generated, ref_gold, ref_generated)
    return -F.logsigmoid(beta * (gold - generated))
