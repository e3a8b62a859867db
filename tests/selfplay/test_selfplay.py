"""Game self-play: tic-tac-toe's rules against an independent check of every reachable state, perfect
minimax, the illegal-move penalty, exact resume, and the one-line error for an unknown game."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.cli.main import main
from stlm.config import OptimConfig, RuntimeConfig
from stlm.selfplay.games import TicTacToe, get_game, outcome, reachable_states
from stlm.selfplay.loop import (
    Moves,
    ReinforceObjective,
    SelfPlayConfig,
    SelfPlayTrainConfig,
    advantages_of,
    play_training_games,
    random_opening,
    selfplay,
)
from stlm.selfplay.players import Minimax
from stlm.selfplay.policy import Policy


def _independent_winner(board: np.ndarray) -> int | None:
    """1 or 2 for a player with three in a row (rows, columns, diagonals of a 3x3 array), 0 for a full
    board without one, None otherwise: written apart from the game's own LINES table."""
    b = board.reshape(3, 3)
    lines = [*b, *b.T, b.diagonal(), np.fliplr(b).diagonal()]
    for player in (1, 2):
        if any((line == player).all() for line in lines):
            return player
    return 0 if (b != 0).all() else None


def test_tictactoe_rules_on_every_reachable_state():
    game = TicTacToe()
    # Independent enumeration: place X, O, X, ... on empty cells, stopping at a win or a full board.
    found: set[tuple] = set()
    stack = [np.zeros(9, dtype=int)]
    while stack:
        board = stack.pop()
        key = tuple(int(v) for v in board)
        if key in found:
            continue
        found.add(key)
        result = _independent_winner(board)
        if result is not None:
            continue
        mark = 1 if (board == 1).sum() == (board == 2).sum() else 2
        for cell in np.flatnonzero(board == 0):
            nxt = board.copy()
            nxt[cell] = mark
            stack.append(nxt)
    states = reachable_states(game)
    assert len(states) == len(set(states)) == len(found) == 5478  # the known count of legal positions
    assert set(states) == found
    terminal = {"x": 0, "o": 0, "draw": 0}
    for state in states:
        board = np.array(state)
        expected = _independent_winner(board)
        won = game.winner(state)
        assert won == (None if expected is None else {1: 0, 2: 1, 0: -1}[expected]), state
        expected_legal = [] if expected is not None else [int(i) for i in np.flatnonzero(board == 0)]
        assert game.legal(state) == expected_legal, state
        assert game.to_move(state) == int((board == 1).sum() > (board == 2).sum())
        if won is not None:
            terminal[{0: "x", 1: "o", -1: "draw"}[won]] += 1
        prompt = game.prompt(state)
        assert prompt[0] == "XO"[game.to_move(state)] and prompt.replace("|", "")[1:-1] == "".join(
            ".XO"[v] for v in state
        )
    assert terminal == {"x": 626, "o": 316, "draw": 16}  # the known counts of final positions


def _every_game(game, seat_player, seat, other):
    """Outcomes for `seat` over every game where seat_player(state) lists the seat's moves and other(state)
    the other's (each listed move a branch)."""
    results, frontier = [], [game.initial()]
    while frontier:
        state = frontier.pop()
        if game.winner(state) is not None:
            results.append(outcome(game, state, seat))
            continue
        moves = seat_player(state) if game.to_move(state) == seat else other(state)
        frontier.extend(game.play(state, a) for a in moves)
    return results


def test_minimax_is_perfect():
    game = TicTacToe()
    minimax = Minimax(game)
    assert minimax.value(game.initial()) == 0  # tic-tac-toe is a draw
    for seat in (0, 1):
        # Against itself (every optimal choice on both sides): always a draw.
        assert set(_every_game(game, minimax.optimal_moves, seat, minimax.optimal_moves)) == {0.0}
        # Against every possible opponent (any legal move): never a loss, and it wins some.
        results = _every_game(game, minimax.optimal_moves, seat, game.legal)
        assert -1.0 not in results and 1.0 in results
    # It takes a win in one and blocks the opponent's: X to move on XX. / OO. / ...
    state = (1, 1, 0, 2, 2, 0, 0, 0, 0)
    assert minimax.optimal_moves(state) == [2]
    assert minimax.optimal_moves((1, 1, 0, 0, 2, 0, 0, 0, 0)) == [2]  # O must block at cell 3


class AlwaysCellOne(nn.Module):
    """A stand-in policy model that always answers the byte "1" (cell 1)."""

    def __init__(self, one_id: int, vocab: int):
        super().__init__()
        self.one_id, self.vocab = one_id, vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.one_id] = 100.0
        return logits


def test_an_illegal_move_ends_the_game_with_the_penalty():
    game = TicTacToe()
    family, cfg = registry.resolve_model("decoder-tiny")
    tokenizer = family.resolve_tokenizer("auto", cfg)
    policy = Policy(game, family, tokenizer)
    model = AlwaysCellOne(tokenizer.encode("1")[0], cfg.vocab_size)
    moves = play_training_games(
        game,
        policy,
        [model],
        np.zeros((3, 2), dtype=np.int64),
        gamma=0.5,
        illegal_reward=-2.0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    # Each game: X takes cell 1, O answers cell 1 again (illegal): O gets -2, X gets 0 (a draw's 0).
    # (The games move in lockstep: all three first moves, then all three second ones.)
    assert moves.actions == [0] * 6 and moves.seats == [0, 0, 0, 1, 1, 1]
    assert moves.returns == [0.0] * 3 + [-2.0] * 3 and moves.illegal == 3
    assert moves.results == [0.0, -2.0] * 3  # per game, X's result then O's


def _cfg(**train) -> SelfPlayConfig:
    settings = dict(updates=4, games=12, eval_every=2, eval_games=6, log_every=1)
    if train.get("algorithm", "reinforce") == "reinforce":
        settings["snapshot_every"] = 2  # (a REINFORCE setting: rollout refuses it)
    settings.update(train)
    return SelfPlayConfig(
        arch={"d_model": 32, "n_layers": 1, "n_heads": 2},
        optim=OptimConfig(lr=3e-3, warmup_steps=1, weight_decay=0.0, schedule="constant"),
        train=SelfPlayTrainConfig(**settings),
        runtime=RuntimeConfig(device="cpu", precision="fp32"),
    )


ROLLOUT = {"algorithm": "rollout", "random_opening": 2, "games": 6, "batch": 16, "refresh": 3}
FRESH = {**ROLLOUT, "refresh": 0}  # targets computed afresh for every drawn position


@pytest.mark.parametrize(
    "train", [{"baseline": "seat"}, {"baseline": "state"}, {"baseline": "critic", "random_opening": 2}, ROLLOUT, FRESH]
)
def test_selfplay_resume_is_exact(tmp_path, one_thread, train):
    full = selfplay(_cfg(**train), tmp_path / "full", progress=False)
    assert full.finished and (tmp_path / "full" / "curve.png").stat().st_size > 0
    rollout = train.get("algorithm") == "rollout"
    snapshots = [] if rollout else ["step-2.pt", "step-4.pt"]  # rollout plays the current policy only
    assert sorted(p.name for p in (tmp_path / "full").glob("snapshots/*")) == snapshots
    stopped = selfplay(_cfg(**train), tmp_path / "part", stop_at=3, progress=False)
    assert stopped.step == 3 and not stopped.finished
    resumed = selfplay(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.finished and resumed.results == full.results
    a, b = (ckpt_io.load(r.checkpoint).model.state_dict() for r in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("full", "part")]
    strip = [[{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in run] for run in lines]
    assert strip[0] == strip[1]
    if rollout:
        grown = [r["positions"] for r in strip[0] if "positions" in r]
        assert grown == sorted(grown) and grown[0] > 0  # the positions seen only grow


def test_unknown_game_is_one_line(tmp_path, capsys):
    assert main(["selfplay", "--game", "chess", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "stlm selfplay: error: unknown game 'chess'; known: tictactoe"
    assert not (tmp_path / "x").exists()


class FirstFree(nn.Module):
    """A stand-in policy model that answers the first free cell in `ORDER` (both seats: a drawn game)."""

    ORDER = (0, 1, 2, 3, 4, 6, 5, 8, 7)

    def __init__(self, action_ids: list[int], vocab: int):
        super().__init__()
        self.action_ids, self.vocab = action_ids, vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        for row, seq in enumerate(ids.tolist()):
            text = bytes(i for i in seq if i < 256).decode()
            board = text[text.index("|") + 1 : text.index(">")].replace("|", "")  # 9 cells, "." empty
            cell = next(c for c in self.ORDER if board[c] == ".")
            logits[row, :, self.action_ids[cell]] = 100.0
        return logits


def test_a_drawn_game_returns_the_draw_reward_to_both_seats():
    game = TicTacToe()
    family, cfg = registry.resolve_model("decoder-tiny")
    tokenizer = family.resolve_tokenizer("auto", cfg)
    policy = Policy(game, family, tokenizer)
    model = FirstFree([tokenizer.encode(a)[0] for a in game.actions], cfg.vocab_size)
    moves = play_training_games(
        game,
        policy,
        [model],
        np.zeros((1, 2), dtype=np.int64),
        gamma=0.5,
        illegal_reward=-1.0,
        draw_reward=0.25,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    assert moves.actions == list(FirstFree.ORDER) and moves.illegal == 0
    # X made 5 moves, O 4: each move's return is the draw reward discounted per later own move.
    expected = {0: [0.25 * 0.5**k for k in (4, 3, 2, 1, 0)], 1: [0.25 * 0.5**k for k in (3, 2, 1, 0)]}
    assert [r for r, s in zip(moves.returns, moves.seats) if s == 0] == expected[0]
    assert [r for r, s in zip(moves.returns, moves.seats) if s == 1] == expected[1]
    assert moves.results == [0.0, 0.0]  # the recorded results stay the game's (a draw)


def test_the_digits_prompt_shows_each_empty_cell_as_its_move():
    plain, digits = TicTacToe(), get_game("tictactoe", board="digits")
    for state in reachable_states(plain):
        prompt = digits.prompt(state)
        assert prompt.translate(str.maketrans("123456789", "." * 9)) == plain.prompt(state)
        free = [c for c in prompt if c.isdigit()]
        assert free == [digits.actions[i] for i, v in enumerate(state) if v == 0]
        if digits.winner(state) is None:
            assert free == [digits.actions[a] for a in digits.legal(state)]


def test_the_state_baseline_is_a_running_mean_return_per_position():
    game = get_game("tictactoe")
    start, corner = game.initial(), game.play(game.initial(), 0)
    moves = Moves(states=[start, start, corner], actions=[0, 4, 4], seats=[0, 0, 1], returns=[1.0, 0.0, -1.0])
    train = SelfPlayTrainConfig(baseline="state", baseline_momentum=0.5, scale_advantages=False)
    state = {"baselines": [0.2, -0.4], "values": {}}
    # first visits: compared with their seat's baseline; each position's value is then its mean return
    assert advantages_of(moves, game, state, train).tolist() == pytest.approx([0.8, -0.2, -0.6])
    assert state["values"] == {game.prompt(start): 0.5, game.prompt(corner): -1.0}
    assert state["baselines"] == pytest.approx([0.5 * 0.2 + 0.5 * 0.5, 0.5 * -0.4 + 0.5 * -1.0])
    # later visits: compared with the position's value, which moves by the momentum
    again = Moves(states=[corner], actions=[2], seats=[1], returns=[1.0])
    assert advantages_of(again, game, state, train).tolist() == pytest.approx([2.0])
    assert state["values"][game.prompt(corner)] == pytest.approx(0.0)
    # the seat baseline ignores positions
    seat = {"baselines": [0.2, -0.4], "values": {}}
    plain = SelfPlayTrainConfig(baseline="seat", scale_advantages=False)
    assert advantages_of(moves, game, seat, plain).tolist() == pytest.approx([0.8, -0.2, -0.6])
    expected = 1.0 - seat["baselines"][1]
    assert advantages_of(again, game, seat, plain).tolist() == pytest.approx([expected])
    assert seat["values"] == {}


class FixedLogits(nn.Module):
    """A stand-in policy model whose logits at every position are one learnable vector."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*ids.shape, -1)


def test_the_entropy_bonus_counts_only_the_legal_moves():
    game = TicTacToe()
    family, cfg = registry.resolve_model("decoder-tiny")
    tokenizer = family.resolve_tokenizer("auto", cfg)
    policy = Policy(game, family, tokenizer)
    action_ids = policy.action_ids
    vocab = torch.zeros(cfg.vocab_size)
    vocab[action_ids] = torch.tensor([2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # cell 1 most likely
    model = FixedLogits(vocab)
    state = (1, 0, 0, 0, 0, 0, 0, 0, 0)  # cell 1 taken: eight legal moves
    ids, last = policy.encode([state])
    legal = torch.ones(1, 9, dtype=torch.bool)
    legal[0, 0] = False
    objective = ReinforceObjective(policy, entropy=1.0)
    loss = objective.loss(model, ids, last, torch.tensor([3]), torch.zeros(1), legal)
    p = torch.softmax(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]), 0)  # the eight legal moves, renormalised
    assert loss.item() == pytest.approx(float((p * p.log()).sum()), abs=1e-6)  # -H of the legal moves
    loss.backward()
    assert model.logits.grad[action_ids[0]].abs().item() < 1e-9  # the taken cell's logit gets no entropy push


def test_the_legal_loss_is_minus_log_the_legal_mass_and_pushes_only_taken_cells_down():
    game = TicTacToe()
    family, cfg = registry.resolve_model("decoder-tiny")
    policy = Policy(game, family, family.resolve_tokenizer("auto", cfg))
    vocab = torch.zeros(cfg.vocab_size)
    vocab[policy.action_ids] = torch.tensor([2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    model = FixedLogits(vocab)
    ids, last = policy.encode([(1, 0, 0, 0, 0, 0, 0, 0, 0)])  # cell 1 taken
    legal = torch.ones(1, 9, dtype=torch.bool)
    legal[0, 0] = False
    objective = ReinforceObjective(policy, entropy=0.0, legal_loss=0.5)
    loss = objective.loss(model, ids, last, torch.tensor([3]), torch.zeros(1), legal)  # zero advantage
    p = torch.softmax(torch.tensor([2.0, 0, 0, 1, 0, 0, 0, 0, 0]), 0)
    assert loss.item() == pytest.approx(-0.5 * math.log(1 - p[0].item()), abs=1e-6)
    loss.backward()
    grad = model.logits.grad[policy.action_ids]
    assert grad[0] > 0 and (grad[1:] < 0).all()  # descent lowers the taken cell, raises every legal one
    assert ReinforceObjective(policy, entropy=0.0).loss(model, ids, last, torch.tensor([3]), torch.zeros(1), legal) == 0


def test_the_critic_advantage_is_the_move_mean_less_the_position_mean():
    game = get_game("tictactoe")
    start = game.initial()
    train = SelfPlayTrainConfig(baseline="critic", baseline_momentum=0.5, scale_advantages=False)
    state = {"baselines": [0.0, 0.0], "values": {}, "q": {}}
    # from the start: move 0 won once and lost once, move 4 won: V = 1/3, Q(0) = 0, Q(4) = 1
    moves = Moves(states=[start] * 3, actions=[0, 0, 4], seats=[0, 0, 0], returns=[1.0, -1.0, 1.0])
    assert advantages_of(moves, game, state, train).tolist() == pytest.approx([-1 / 3, -1 / 3, 2 / 3])
    # the means move by the momentum before they are used: V = (1/3 + 1) / 2, Q(4) = (1 + 1) / 2
    again = Moves(states=[start], actions=[4], seats=[0], returns=[1.0])
    assert advantages_of(again, game, state, train).tolist() == pytest.approx([1.0 - 2 / 3])
    # the sampled outcome of a well-known move barely matters: a loss now moves Q(4) only half-way
    loss = Moves(states=[start], actions=[4], seats=[0], returns=[-1.0])
    assert advantages_of(loss, game, state, train).tolist() == pytest.approx([0.0 - (2 / 3 - 1) / 2])


def test_random_openings_are_legal_unfinished_and_of_the_drawn_length():
    game = get_game("tictactoe")
    rng = np.random.default_rng(0)
    seen = set()
    for k in range(5):  # a win takes five moves: these lengths are always reached
        for _ in range(50):
            state = random_opening(game, rng, k)
            assert sum(v != 0 for v in state) == k and game.winner(state) is None  # no win within 5 moves
            seen.add(state)
    assert len(seen) > 100  # many different openings
    assert random_opening(game, rng, 0) == game.initial()
