"""Rollout policy improvement (stlm/selfplay/rollout.py): exact targets near the end, perfect play as its fixed
point, the cross-entropy objective, the exploring games, and untrusted checkpoint positions (resume:
test_selfplay.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.cli.main import main
from stlm.errors import UserError
from stlm.selfplay.games import MARKS, TicTacToe, reachable_states
from stlm.selfplay.loop import selfplay
from stlm.selfplay.players import Minimax
from stlm.selfplay.policy import Policy
from stlm.selfplay.rollout import Legal, RolloutObjective, as_targets, best_moves, from_bits, play_positions, to_bits
from tests.selfplay.test_selfplay import ROLLOUT, _cfg


def _policy(game):
    family, cfg = registry.resolve_model("decoder-tiny", {"d_model": 32, "n_layers": 1, "n_heads": 2})
    tokenizer = family.resolve_tokenizer("auto", cfg)
    return Policy(game, family, tokenizer), family, cfg, tokenizer


class Perfect(nn.Module):
    """A stand-in policy model that reads the board from the prompt and favours minimax's moves."""

    def __init__(self, game, action_ids: list[int], vocab: int):
        super().__init__()
        self.minimax, self.action_ids, self.vocab = Minimax(game), action_ids, vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        for row, seq in enumerate(ids.tolist()):
            text = bytes(i for i in seq if i < 256).decode()
            cells = text[text.index("|") + 1 : text.index(">")].replace("|", "")
            state = tuple(MARKS.index(c) for c in cells)
            for move in self.minimax.optimal_moves(state):
                logits[row, :, self.action_ids[move]] = 10.0
        return logits


def _unfinished(game):
    return sorted(s for s in reachable_states(game) if game.winner(s) is None)


def test_targets_are_the_perfect_moves_where_at_most_two_moves_are_left(one_thread):
    # Any policy: after one of two moves the last is forced, so every playout value is exact.
    game = TicTacToe()
    policy, family, cfg, _ = _policy(game)
    torch.manual_seed(0)
    model = family.build(cfg).eval()
    minimax = Minimax(game)
    late = [s for s in _unfinished(game) if s.count(0) <= 2]
    targets = as_targets(best_moves(game, policy, model, Legal(game), late, gamma=0.9, device="cpu"))
    assert len(late) > 100 and torch.allclose(targets.sum(-1), torch.ones(len(late), dtype=targets.dtype))
    for state, row in zip(late, targets):
        assert set(torch.nonzero(row)[:, 0].tolist()) == set(minimax.optimal_moves(state)), state


def test_perfect_play_is_the_fixed_point(one_thread):
    # With a perfect policy in both seats every playout is perfect play: on every position, the targets are
    # exactly minimax's moves (the induction step of rollout.py's argument, checked everywhere).
    game = TicTacToe()
    policy, _, cfg, tokenizer = _policy(game)
    model = Perfect(game, [tokenizer.encode(a)[0] for a in game.actions], cfg.vocab_size)
    positions = _unfinished(game)
    targets = as_targets(best_moves(game, policy, model, Legal(game), positions, gamma=0.9, device="cpu"))
    minimax = Minimax(game)
    for state, row in zip(positions, targets):
        support = torch.nonzero(row)[:, 0].tolist()
        assert set(support) == set(minimax.optimal_moves(state)), state
        assert torch.allclose(row[support], torch.full((len(support),), 1 / len(support), dtype=row.dtype))


def test_the_draw_reward_and_the_discount_order_the_moves(one_thread):
    # X to move: X . X / O O . / . . .  X wins now at cell 2; with cell 6 O wins at once.
    game = TicTacToe()
    policy, _, cfg, tokenizer = _policy(game)
    model = Perfect(game, [tokenizer.encode(a)[0] for a in game.actions], cfg.vocab_size)
    state = (1, 0, 1, 2, 2, 0, 0, 0, 0)
    targets = as_targets(best_moves(game, policy, model, Legal(game), [state], gamma=0.9, device="cpu"))
    assert torch.nonzero(targets[0])[:, 0].tolist() == [1]


def test_the_objective_is_the_cross_entropy_to_the_targets():
    game = TicTacToe()
    policy, family, cfg, _ = _policy(game)
    torch.manual_seed(0)
    model = family.build(cfg)
    positions = [game.initial(), (1, 0, 0, 0, 2, 0, 0, 0, 0)]
    ids, last = policy.encode(positions)
    targets = torch.zeros(2, 9)
    targets[0, 4] = 1.0
    targets[1, [0, 8]] = 0.5
    loss = RolloutObjective(policy).loss(model, ids, last, targets)
    log_pi = torch.log_softmax(policy.logits(model, ids, last), -1)
    by_hand = -(log_pi[0, 4] + 0.5 * log_pi[1, 0] + 0.5 * log_pi[1, 8]) / 2
    assert torch.allclose(loss, by_hand)


def test_the_exploring_games_move_only_in_unfinished_positions_and_play_to_the_end(one_thread):
    game = TicTacToe()
    policy, family, cfg, _ = _policy(game)
    torch.manual_seed(0)
    model = family.build(cfg).eval()
    starts = [game.initial()] * 20
    for explore in (0.0, 1.0):
        visited = play_positions(
            game, policy, model, Legal(game), starts, explore=explore, rng=np.random.default_rng(0), device="cpu"
        )
        assert all(game.winner(s) is None for s in visited)
        assert sum(s == game.initial() for s in visited) == 20  # every game made its first move
        assert 20 * 5 <= len(visited) <= 20 * 9  # a game lasts 5 to 9 moves
    greedy = play_positions(
        game, policy, model, Legal(game), starts, explore=0.0, rng=np.random.default_rng(0), device="cpu"
    )
    assert len(set(greedy)) == len(greedy) // 20  # no exploration: 20 copies of one deterministic game


def test_target_masks_round_trip_through_bits():
    best = torch.rand(50, 9) < 0.4
    best[:, 3] = True
    assert torch.equal(from_bits(to_bits(best), 9), best)
    assert to_bits(torch.tensor([[True, False, True]])) == [5]


@pytest.mark.parametrize(
    "key, bad",
    [
        ("positions", [[3] * 9]),
        ("positions", [[1] * 9]),
        ("positions", [[0] * 8]),
        ("positions", [["x"] * 9]),
        ("positions", [[[0]] * 9]),
        ("positions", {"a": 1}),
        ("targets", []),  # one target per position
        ("targets", "all"),
        ("targets", None),
    ],
)
def test_a_checkpoint_with_impossible_positions_is_refused(tmp_path, one_thread, key, bad):
    run = tmp_path / "run"
    selfplay(_cfg(**{**ROLLOUT, "updates": 2}), run, stop_at=1, progress=False)
    ckpt = ckpt_io.latest_checkpoint(run)
    state = json.loads((ckpt / "state.json").read_text())
    state[key] = bad
    (ckpt / "state.json").write_text(json.dumps(state))
    _reseal(ckpt)
    with pytest.raises(UserError, match="positions are not tictactoe positions with targets"):
        selfplay(None, run, resume=True, progress=False)


def test_a_target_naming_an_occupied_cell_is_refused(tmp_path, one_thread):
    run = tmp_path / "run"
    selfplay(_cfg(**{**ROLLOUT, "updates": 2}), run, stop_at=1, progress=False)
    ckpt = ckpt_io.latest_checkpoint(run)
    state = json.loads((ckpt / "state.json").read_text())
    i, position = next((i, p) for i, p in enumerate(state["positions"]) if any(p))
    state["targets"][i] |= 1 << position.index(next(v for v in position if v))  # a taken cell
    (ckpt / "state.json").write_text(json.dumps(state))
    _reseal(ckpt)
    with pytest.raises(UserError, match="positions are not tictactoe positions with targets"):
        selfplay(None, run, resume=True, progress=False)


def _reseal(ckpt) -> None:
    """Rewrite the manifest as a forger would, so only the positions check stands in the way."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    data = (ckpt / "state.json").read_bytes()
    manifest["state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algorithm", "rollout", "--entropy", "0.3"], "train.entropy applies to --algorithm reinforce only"),
        (["--algorithm", "rollout", "--baseline", "state"], "train.baseline applies to --algorithm reinforce only"),
        (["--refresh", "10"], "train.refresh applies to --algorithm rollout only"),
        (["--algorithm", "rollout", "--batch", "0"], "train.batch must be >= 1"),
        (["--algorithm", "rollout", "--explore", "1.5"], "train.explore must be in [0, 1]"),
    ],
)
def test_a_setting_the_algorithm_does_not_read_is_one_line(tmp_path, capsys, flags, message):
    assert main(["selfplay", *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stlm selfplay: error:") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()
