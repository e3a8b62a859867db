import math

import torch

from stlm.objectives.next_token import model_loss, next_token_loss, shift


def test_shift_pairs_each_input_with_the_following_id():
    window = torch.tensor([[257, 104, 105, 258, 257]])
    inputs, targets = shift(window)
    assert inputs.tolist() == [[257, 104, 105, 258]]
    assert targets.tolist() == [[104, 105, 258, 257]]


def test_loss_is_mean_nll_over_unmasked_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 4, 0], [2, 2, 3]])
    logp = logits.log_softmax(-1)
    expected = -sum(logp[b, t, targets[b, t]] for b in range(2) for t in range(3)) / 6
    assert math.isclose(float(next_token_loss(logits, targets)), float(expected), rel_tol=1e-6)

    # Masking: targets equal to the pad id neither add loss nor count in the mean.
    masked = targets.clone()
    masked[0, 1] = masked[1, 2] = 4
    kept = [(0, 0), (0, 2), (1, 0), (1, 1)]
    expected = -sum(logp[b, t, masked[b, t]] for b, t in kept) / len(kept)
    assert math.isclose(float(next_token_loss(logits, masked, ignore_id=4)), float(expected), rel_tol=1e-6)


def test_model_loss_uses_shifted_targets():
    class Oracle(torch.nn.Module):
        """Puts all mass on the id that really follows each position."""

        def __init__(self, window):
            super().__init__()
            self.window = window

        def forward(self, ids):
            logits = torch.full((*ids.shape, 8), -1e4)
            nxt = self.window[:, 1:]
            return logits.scatter(-1, nxt.unsqueeze(-1), 0.0)

    window = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert float(model_loss(Oracle(window), window)) < 1e-3
