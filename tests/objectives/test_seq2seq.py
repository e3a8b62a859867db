import math

import numpy as np
import torch

from stlm.objectives.seq2seq import seq2seq_loss

V = 7


class StandIn(torch.nn.Module):
    """Logits from a table over (last input id, decoder input id); records its calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(V, V, V))
        self.calls = []

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        self.calls.append((input_ids, decoder_input_ids, attention_mask))
        last = input_ids[:, -1:].expand_as(decoder_input_ids)  # (B, L)
        return self.table[last, decoder_input_ids]  # (B, L, V)


def hand_loss(model, inputs, decoder_inputs, targets, counted):
    total = 0.0
    for b, t in counted:
        logits = model.table.detach()[inputs[b, -1], decoder_inputs[b, t]]
        total -= float(logits.log_softmax(-1)[targets[b, t]])
    return total / len(counted)


def test_loss_is_mean_cross_entropy_with_targets_shifted_right():
    model = StandIn()
    inputs = torch.tensor([[3, 4, 5], [6, 2, 3]])
    targets = torch.tensor([[6, 3, 4, 1], [5, 5, 2, 1]])
    loss = seq2seq_loss(model, inputs, targets, decoder_start_id=0)

    _, decoder_inputs, mask = model.calls[0]
    assert decoder_inputs.tolist() == [[0, 6, 3, 4], [0, 5, 5, 2]]  # start id, then targets[:-1]
    assert mask is None
    counted = [(b, t) for b in range(2) for t in range(4)]
    assert math.isclose(loss.item(), hand_loss(model, inputs, decoder_inputs, targets, counted), rel_tol=1e-6)


def test_pad_targets_add_nothing_to_the_loss():
    model = StandIn()
    inputs = torch.tensor([[3, 4, 5], [6, 2, 3]])
    targets = torch.tensor([[6, 3, 1, 0], [5, 5, 2, 1]])  # row 0 padded after its EOS
    mask = torch.ones_like(inputs)
    loss = seq2seq_loss(model, inputs, targets, pad_id=0, attention_mask=mask)

    _, decoder_inputs, passed = model.calls[0]
    assert passed is mask
    assert decoder_inputs.tolist() == [[0, 6, 3, 1], [0, 5, 5, 2]]
    counted = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert math.isclose(loss.item(), hand_loss(model, inputs, decoder_inputs, targets, counted), rel_tol=1e-6)

    # Whatever the model says where the target is PAD changes nothing.
    with torch.no_grad():
        model.table[5, 1] += 100.0  # row 0, position 3 reads (last input 5, decoder input 1)
    assert math.isclose(seq2seq_loss(model, inputs, targets, pad_id=0).item(), loss.item(), rel_tol=1e-6)

    # Hugging Face's -100 labels are ignored the same way.
    hf_labels = targets.masked_fill(targets == 0, -100)
    assert math.isclose(seq2seq_loss(model, inputs, hf_labels).item(), loss.item(), rel_tol=1e-6)
    assert model.calls[-1][1].tolist() == decoder_inputs.tolist()


def test_gradients_flow():
    model = StandIn()
    loss = seq2seq_loss(model, torch.tensor([[1, 2]]), torch.tensor([[3, 1]]))
    loss.backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0


def test_t5_debug_on_a_span_corruption_batch():
    from stlm.models.t5 import T5Model, config_from_name, shift_right
    from stlm.objectives.span_corruption import corrupt, noise_mask, span_lengths
    from stlm.tokenizers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    s = span_lengths(64, 0.15, 3.0)
    text = "The quick brown fox jumps over the lazy dog. " * 10
    window = np.array(tok.encode(text, eos=True)[: s.raw_length])
    rng = np.random.default_rng(0)
    masks = np.stack([noise_mask(s.raw_length, s.n_noise, s.n_spans, rng) for _ in range(2)])
    sentinels = [tok.sentinel_id(k) for k in range(s.n_spans)]
    inputs, targets = map(torch.from_numpy, corrupt(np.stack([window, window]), masks, sentinels, tok.eos_id))

    torch.manual_seed(0)
    config = config_from_name("t5-debug")
    model = T5Model(config)
    assert config.vocab_size == tok.vocab_size
    loss = seq2seq_loss(model, inputs, targets, pad_id=tok.pad_id, decoder_start_id=config.decoder_start_id)
    assert abs(loss.item() - math.log(tok.vocab_size)) < 1.0  # about uniform at initialisation
    with torch.no_grad():
        logits = model(inputs, shift_right(targets, config.decoder_start_id))  # (B, L, V)
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
