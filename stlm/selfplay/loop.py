"""Self-play: one language-model policy plays both seats of a game and learns from the games, by REINFORCE
(`algorithm` "reinforce", below) or by rollout policy improvement ("rollout", rollout.py: each position's
target is the move whose greedy self-play continuation does best; cross-entropy to it).

    each REINFORCE update (step):
      play `games` games at once; in most the current policy holds both seats, in `snapshot_prob`
      of them one seat (chosen at random) is held by a past snapshot of the policy; with
      `random_opening` N, each game starts after 0..N uniformly random moves (not trained on)
      every move of the current policy gets its seat's return G: the game's result for that seat
      (1 win, `draw_reward` (0) draw, -1 loss; `illegal_reward` for an illegal move, which ends the
      game, the other seat getting 0), discounted by `gamma` per later own move, so a quicker win earns more
      advantage  A = G - b            b (`baseline`): "seat", a per-seat (per-role) moving average of G, or
                                      "state", a moving average of G per position seen (the seat's until a
                                      position is first seen), each with `baseline_momentum`; or "critic",
                                      A = Q(position, move) - V(position), both running means of G; A is
                                      then divided by the update's standard deviation (`scale_advantages`)
      loss       -mean(A * log pi(move | prompt)) - entropy * mean(H(pi( . | prompt, legal moves only)))
                 + legal_loss * mean(-log pi(legal moves | prompt))   (the rules as a dense term; 0: off)
      one optimizer step of the shared training step (stlm/training/step.py)
    every `eval_every` updates: the greedy policy against a uniformly random player (`eval_games` games
      from each seat) and against a perfect minimax player from each seat, following every game a
      perfect player might choose; the illegal-move rate of the policy's own moves in those games

The policy is any decoder-only stlm model: the move is the next token after
the game's prompt, chosen among the game's action tokens only (one byte each
for tic-tac-toe), so an illegal move is the policy's own choice.

Randomness comes from (seed, step): the games of update s (moves sampled,
opponents and seats drawn) are the same in a resumed run, and snapshots are
saved beside the checkpoints, so resuming is exact.

A run folder holds config.json, metrics.jsonl (training every `log_every`
updates, evaluations every `eval_every`), checkpoints/step-N, snapshots/,
curve.png (the learning curve) and results.json (the last evaluation).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import OptimConfig, RuntimeConfig, SectionedConfig, apply_resume_overrides
from stlm.errors import UserError
from stlm.families import ModelFamily
from stlm.runtime import resolve_runtime, run_header, seed_everything
from stlm.selfplay.games import Game, get_game, outcome, reachable_states
from stlm.selfplay.players import Minimax, random_move
from stlm.selfplay.policy import Policy
from stlm.selfplay.rollout import Legal, RolloutObjective, as_targets, best_moves, from_bits, play_positions, to_bits
from stlm.training import distributed
from stlm.training.logging import MetricsLog, parse_metrics
from stlm.training.optim import lr_at
from stlm.training.step import StopSignal, progress_bar, setup, train_step

RESULTS = "results.json"
CURVE = "curve.png"
SNAPSHOTS = "snapshots"
BASELINES = ("seat", "state", "critic")
ALGORITHMS = ("reinforce", "rollout")
ONLY = {  # the settings that only one algorithm reads
    "reinforce": (
        "snapshot_prob",
        "snapshot_every",
        "snapshots",
        "entropy",
        "legal_loss",
        "baseline",
        "baseline_momentum",
        "scale_advantages",
        "illegal_reward",
    ),
    "rollout": ("explore", "batch", "refresh"),
}
RESUME_SAFE_KEYS = ("train.log_every", "runtime.device", "runtime.threads")


@dataclass
class SelfPlayTrainConfig:
    algorithm: str = "reinforce"  # reinforce (policy gradient on game results) | rollout (targets by playouts)
    updates: int = 300  # updates (optimizer steps)
    games: int = 128  # games played per update
    explore: float = 0.2  # rollout: chance of a uniformly random legal move in the games that find positions
    batch: int = 256  # rollout: positions (drawn from all seen so far) trained on per update
    refresh: int = 100  # rollout: updates between recomputing every known position's target (0: each drawn
    # position's target is computed afresh every time it is drawn: the newest targets, more playouts per step)
    snapshot_prob: float = 0.3  # share of games where a past snapshot holds one seat (the rest: self against self)
    random_opening: int = 0  # games start after 0..N uniformly random moves (not trained on): wider coverage
    snapshot_every: int = 25  # updates between snapshots of the policy kept as opponents
    snapshots: int = 8  # past snapshots kept (the oldest dropped)
    entropy: float = 0.01  # weight of the entropy bonus
    legal_loss: float = 0.0  # weight of -log P(any legal move) at every position the policy moved in (0: off)
    baseline: str = "seat"  # seat (per-role mean return) | state (per-position mean) | critic (Q - V means)
    baseline_momentum: float = 0.9  # baselines: b <- m * b + (1 - m) * mean return of the update
    scale_advantages: bool = True  # divide the update's advantages by their standard deviation (a steadier step)
    gamma: float = 0.9  # return discount per later own move (a quicker win is worth more)
    illegal_reward: float = -1.0  # return of an illegal move, which ends the game
    draw_reward: float = 0.0  # return of a drawn game for both seats (a win is 1, a loss -1)
    eval_every: int = 25  # updates between evaluations (and at the end)
    eval_games: int = 200  # games against the random player from each seat
    log_every: int = 5  # updates between training records in metrics.jsonl
    seed: int = 0  # init, games and evaluation
    nonfinite_skips: int = 3  # consecutive updates with a NaN/inf loss or gradient skipped before the run stops

    def __post_init__(self) -> None:
        _check(self.algorithm in ALGORITHMS, f"train.algorithm must be one of {', '.join(ALGORITHMS)}")
        _check(0.0 <= self.explore <= 1.0, "train.explore must be in [0, 1]")
        _check(self.refresh >= 0, "train.refresh must be >= 0")
        for name in (
            "updates",
            "games",
            "batch",
            "snapshot_every",
            "snapshots",
            "eval_every",
            "eval_games",
            "log_every",
        ):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        _check(0.0 <= self.snapshot_prob <= 1.0, "train.snapshot_prob must be in [0, 1]")
        _check(self.random_opening >= 0, "train.random_opening must be >= 0")
        _check(self.baseline in BASELINES, f"train.baseline must be one of {', '.join(BASELINES)}")
        _check(0.0 <= self.baseline_momentum < 1.0, "train.baseline_momentum must be in [0, 1)")
        _check(0.0 < self.gamma <= 1.0, "train.gamma must be in (0, 1]")
        _check(self.entropy >= 0, "train.entropy must be >= 0")
        _check(self.legal_loss >= 0, "train.legal_loss must be >= 0")
        _check(self.nonfinite_skips >= 0, "train.nonfinite_skips must be >= 0")
        _check(0 <= self.seed < 2**63, "train.seed must be in [0, 2**63)")
        defaults = SelfPlayTrainConfig.__dataclass_fields__
        for name in ONLY["rollout" if self.algorithm == "reinforce" else "reinforce"]:
            _check(
                getattr(self, name) == defaults[name].default,
                f"train.{name} applies to --algorithm {'rollout' if self.algorithm == 'reinforce' else 'reinforce'} "
                f"only; drop it or choose that algorithm",
            )


def _selfplay_optim() -> OptimConfig:
    return OptimConfig(lr=1e-3, warmup_steps=10, weight_decay=0.0, schedule="constant")


@dataclass
class SelfPlayConfig(SectionedConfig):
    game: str = "tictactoe"  # the game both seats play (tictactoe)
    board: str = "dots"  # how the prompt shows an empty cell: dots (".") | digits (its move byte, a copy to learn)
    model: str = "decoder-tiny"  # a decoder-only preset: the policy
    # model settings changed from the preset (as a pretraining run's model.<key>): a narrow policy is plenty here
    arch: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 2, "n_heads": 2})
    optim: OptimConfig = field(default_factory=_selfplay_optim)
    train: SelfPlayTrainConfig = field(default_factory=SelfPlayTrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class SelfPlayResult:
    out: Path
    step: int
    checkpoint: Path
    results: dict[str, Any]  # the last evaluation (what results.json holds)
    finished: bool  # all the updates ran (else: stopped at stop_at; resume it)


@dataclass
class ReinforceObjective:
    """REINFORCE with an entropy bonus as an `Objective`: tensors = ids (N, T), last (N,), moves (N,),
    advantages (N,), legal (N, A) bool.

    The bonus is the entropy of the policy restricted to the legal moves (renormalised over them): a bonus
    over every action would pay the policy to keep mass on occupied cells, against the illegal-move penalty.
    `legal_loss` weighs -log P(legal) at every position, whatever move was sampled: the sampled penalty
    reaches an illegal move only where the policy happens to try it, this term teaches the rules everywhere.
    """

    policy: Policy
    entropy: float
    legal_loss: float = 0.0

    def loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        ids, last, moves, advantages, legal = tensors
        logits = self.policy.logits(model, ids, last)  # (N, A)
        log_all = torch.logsumexp(logits, -1)  # (N,)
        chosen = logits.gather(1, moves[:, None])[:, 0] - log_all  # (N,) log pi(move)
        masked = logits.masked_fill(~legal, float("-inf"))  # (N, A)
        log_legal = torch.logsumexp(masked, -1)  # (N,)
        among_legal = masked - log_legal[:, None]  # (N, A) log pi over the legal moves, -inf off them
        entropy = -(among_legal.exp() * among_legal.masked_fill(~legal, 0.0)).sum(-1)  # (N,)
        loss = -(advantages * chosen).mean() - self.entropy * entropy.mean()
        if self.legal_loss:  # -log P(legal) = log_all - log_legal
            loss = loss + self.legal_loss * (log_all - log_legal).mean()
        return loss

    def counts(self, tensors: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        return int(tensors[0].numel()), 0


# --- playing ---------------------------------------------------------------------------------


@dataclass
class Moves:
    """The current policy's moves of one update, with what they earned."""

    states: list[tuple] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    seats: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    results: list[float] = field(default_factory=list)  # per game and current-policy seat: its result
    illegal: int = 0


@torch.no_grad()
def play_training_games(
    game: Game,
    policy: Policy,
    models: Sequence[nn.Module],  # models[0]: the current policy; others: snapshots
    holders: np.ndarray,  # (G, 2) which model holds each seat of each game
    *,
    gamma: float,
    illegal_reward: float,
    generator: torch.Generator,
    device,
    draw_reward: float = 0.0,
    starts: Sequence[tuple] | None = None,
) -> Moves:
    """Play the games (moves sampled from each holder's policy) from `starts` (default: the initial
    position) and return the current policy's moves."""
    n = len(holders)
    states = list(starts) if starts is not None else [game.initial()] * n
    done = [False] * n
    rewards = np.zeros((n, 2))  # each seat's result: 1 win, 0 draw, -1 loss, or illegal_reward
    drawn = [False] * n  # played to a draw (not ended by an illegal move)
    history: list[list[int]] = [[] for _ in range(2 * n)]  # (game, seat) -> indexes into moves
    out = Moves()
    while not all(done):
        todo = [g for g in range(n) if not done[g]]
        for m, model in enumerate(models):
            group = [g for g in todo if holders[g, game.to_move(states[g])] == m]
            if not group:
                continue
            ids, last = policy.encode([states[g] for g in group])
            probs = F.softmax(policy.logits(model, ids.to(device), last.to(device)), dim=-1).cpu()  # (n_group, A)
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()
            for g, action in zip(group, chosen):
                seat = game.to_move(states[g])
                if m == 0:
                    history[2 * g + seat].append(len(out.actions))
                    out.states.append(states[g])
                    out.actions.append(action)
                    out.seats.append(seat)
                if action not in game.legal(states[g]):
                    rewards[g, seat] = illegal_reward
                    out.illegal += m == 0
                    done[g] = True
                    continue
                states[g] = game.play(states[g], action)
                if game.winner(states[g]) is not None:
                    rewards[g] = [outcome(game, states[g], 0), outcome(game, states[g], 1)]
                    drawn[g] = not rewards[g].any()
                    done[g] = True
    out.returns = [0.0] * len(out.actions)
    for key, moves in enumerate(history):
        g, seat = divmod(key, 2)
        reward = draw_reward if drawn[g] else rewards[g, seat]
        for k, i in enumerate(moves):
            out.returns[i] = reward * gamma ** (len(moves) - 1 - k)
        if holders[g, seat] == 0:
            out.results.append(rewards[g, seat])
    return out


def random_opening(game: Game, rng: np.random.Generator, moves: int) -> tuple:
    """The position after up to `moves` uniformly random legal moves from the start (fewer if the game
    would end: a training game always has a move left to play)."""
    state = game.initial()
    for _ in range(moves):
        options = [a for a in game.legal(state) if game.winner(game.play(state, a)) is None]
        if not options:
            break
        state = game.play(state, options[int(rng.integers(len(options)))])
    return state


def advantages_of(moves: Moves, game: Game, state: dict[str, Any], train: SelfPlayTrainConfig) -> np.ndarray:
    """Each move's advantage, scaled, with the running means it uses moved towards this update's returns.

    seat:   A = G - b(seat), then b(seat) moves (state["baselines"]);
    state:  A = G - V(position), V the running mean return per position (state["values"]; a position not
            seen before is compared with its seat's b), then V moves;
    critic: V and Q (the running mean return per (position, move), state["q"]) move first, then
            A = Q(position, move) - V(position): the sampled game outcome enters only through these means,
            so one lucky or unlucky game moves the policy far less (an actor-critic with tabular critics).
    """
    returns, seats = np.array(moves.returns), np.array(moves.seats)
    baselines = np.array(state["baselines"])[seats]
    keys = [game.prompt(s) for s in moves.states] if train.baseline != "seat" else []
    m = train.baseline_momentum
    if train.baseline == "state":
        values = state["values"]
        baselines = np.array([values.get(k, b) for k, b in zip(keys, baselines)])
    for seat in (0, 1):  # the per-role baselines follow each seat's mean return
        if (seats == seat).any():
            state["baselines"][seat] = m * state["baselines"][seat] + (1 - m) * float(returns[seats == seat].mean())
    _running_means(state["values"], keys, returns, m)
    if train.baseline == "critic":
        pairs = [f"{k}\x00{a}" for k, a in zip(keys, moves.actions)]
        _running_means(state["q"], pairs, returns, m)
        advantages = np.array([state["q"][p] - state["values"][k] for p, k in zip(pairs, keys)])
    else:
        advantages = returns - baselines
    if train.scale_advantages and len(advantages) > 1:
        advantages = advantages / (advantages.std() + 1e-6)
    return advantages


def _running_means(table: dict[str, float], keys: list[str], returns: np.ndarray, m: float) -> None:
    """Move table[key] towards the mean of this update's returns under that key (a first visit sets it)."""
    seen: dict[str, list[float]] = {}
    for key, g in zip(keys, returns):
        seen.setdefault(key, []).append(float(g))
    for key, gs in seen.items():
        mean = sum(gs) / len(gs)
        table[key] = m * table[key] + (1 - m) * mean if key in table else mean


# --- evaluation ------------------------------------------------------------------------------


def evaluate(game: Game, policy: Policy, model: nn.Module, minimax: Minimax, *, games: int, seed: int, device) -> dict:
    """The greedy policy against the random player and the perfect player, from each seat."""
    out: dict[str, Any] = {}
    moves = illegal = 0
    for seat in (0, 1):
        rng = np.random.default_rng([seed, 7, seat])  # the same random opponent at every evaluation
        tally, m, bad = _play_out(
            game, policy, model, [game.initial()] * games, seat, lambda s: [random_move(game, s, rng)], device
        )
        out[f"random_seat{seat}"] = tally
        moves, illegal = moves + m, illegal + bad
        tally, m, bad = _play_out(game, policy, model, [game.initial()], seat, minimax.optimal_moves, device)
        out[f"minimax_seat{seat}"] = tally
        moves, illegal = moves + m, illegal + bad
    out["illegal_rate"] = illegal / max(1, moves)
    for who in ("random", "minimax"):
        tallies = [out[f"{who}_seat{s}"] for s in (0, 1)]
        out[f"{who}_losses"] = sum(t["loss"] for t in tallies)
        out[f"{who}_non_loss_rate"] = 1 - out[f"{who}_losses"] / sum(sum(t.values()) for t in tallies)
    return out


def _play_out(
    game: Game,
    policy: Policy,
    model: nn.Module,
    starts: list[tuple],
    seat: int,
    replies: Callable[[tuple], list[int]],
    device,
) -> tuple[dict[str, int], int, int]:
    """Play every game from `starts`, the greedy policy in `seat`; the other seat branches into every move
    `replies` lists (one for a random player, all optimal moves for minimax). Returns (win/draw/loss per
    finished game, policy moves, illegal policy moves); an illegal move ends its game as a loss."""
    tally = {"win": 0, "draw": 0, "loss": 0}
    moves = illegal = 0
    frontier = list(starts)
    while frontier:
        ours = [s for s in frontier if game.to_move(s) == seat]
        theirs = [s for s in frontier if game.to_move(s) != seat]
        frontier = []
        for state, action in zip(ours, policy.greedy(model, ours, device)):
            moves += 1
            if action not in game.legal(state):
                illegal += 1
                tally["loss"] += 1
            else:
                frontier.append(game.play(state, action))
        for state in theirs:
            frontier.extend(game.play(state, a) for a in replies(state))
        still = []
        for state in frontier:
            if game.winner(state) is None:
                still.append(state)
            else:
                tally[{1.0: "win", 0.0: "draw", -1.0: "loss"}[outcome(game, state, seat)]] += 1
        frontier = still
    return tally, moves, illegal


# --- the run ---------------------------------------------------------------------------------


def selfplay(
    cfg: SelfPlayConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, object] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> SelfPlayResult:
    """Train a policy by self-play as `cfg` says into `out`, or continue the run in `out` (`resume`).

    `stop_at`: stop (with a resumable checkpoint) after this update.
    """
    overrides = overrides or {}
    if resume:
        out = ckpt_io.resume_target(out)
    else:
        cfg = cfg.with_overrides(overrides)  # a bad setting is refused before anything is written
        get_game(cfg.game, cfg.board)  # an unknown game is refused before anything is written
        ckpt_io.check_output(Path(out))
    with ckpt_io.run_lock(Path(out)):
        return _selfplay(cfg, Path(out), resume=resume, overrides=overrides, stop_at=stop_at, progress=progress)


def _selfplay(cfg, out: Path, *, resume, overrides, stop_at, progress) -> SelfPlayResult:
    latest = ckpt_io.newest_verified(out) if resume else None
    if resume:
        if latest is None:
            raise UserError(f"{out} holds no complete self-play checkpoint to resume from")
        saved = ckpt_io.load_config(latest)
        if "selfplay" not in saved:
            raise UserError(f"{latest} is not a self-play checkpoint")
        cfg = SelfPlayConfig.from_dict(saved["selfplay"], source=f"{latest}/config.json")
        ckpt_io.read_state(latest, total=cfg.train.updates)
        cfg = apply_resume_overrides(cfg, overrides, RESUME_SAFE_KEYS, run_dir=out)
    elif (out / "config.json").exists() or ckpt_io.list_checkpoints(out):
        raise UserError(f"{out} already holds a run; resume it with --resume {out} or choose another --out")
    train = cfg.train
    game = get_game(cfg.game, cfg.board)
    family, model_cfg = registry.resolve_model(cfg.model, cfg.arch)
    if family.encoder_decoder:
        raise UserError(f"self-play trains a decoder-only policy; {cfg.model} is an encoder-decoder")
    runtime = resolve_runtime(cfg.runtime)
    par = distributed.Parallel(mode="none", rank=0, world_size=1, runtime=runtime)
    seed_everything(train.seed)
    model = family.build(model_cfg)
    if latest is not None:
        ckpt_io.load_weights(model, latest)
    tokenizer = family.resolve_tokenizer("auto", model_cfg)
    policy = Policy(game, family, tokenizer)
    rollout = train.algorithm == "rollout"
    legal = Legal(game)
    objective = RolloutObjective(policy) if rollout else ReinforceObjective(policy, train.entropy, train.legal_loss)
    record = ckpt_io.RunRecord(family, model_cfg, tokenizer.to_dict(), {"selfplay": cfg.to_dict()})
    trainer = setup(
        model,
        cfg.optim,
        par,
        run_dir=out,
        nonfinite_skips=train.nonfinite_skips,
        report=lambda row: metrics_log.write(row),
        progress=progress,
    )
    device = runtime.device
    minimax = Minimax(game)
    # baselines: per seat; values: per position (its prompt text), q: per (position, move), for state/critic;
    # positions: every position the rollout games have moved in, each once, in order of discovery
    state: dict[str, Any] = {
        "baselines": [0.0, 0.0],
        "values": {},
        "q": {},
        "snapshots": [],
        "positions": [],
        "targets": [],
        "last_eval": None,
    }
    step = 0
    if latest is not None:
        saved_state = trainer.restore(latest)
        step = int(saved_state["step"])
        state.update({k: saved_state[k] for k in state if k in saved_state})
        _check_positions(game, state, latest, stored=cfg.train.refresh > 0)
    else:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_io.write_run_config(out, {**record.to_dict(), "header": run_header(runtime.describe())})
    metrics_log = MetricsLog(out / "metrics.jsonl", resume_step=step if latest is not None else None)
    snapshots = [_load_snapshot(family, model_cfg, out, s, device) for s in state["snapshots"]]
    if progress:
        print(
            f"stlm selfplay: {game.name}, {cfg.model} policy on {runtime.describe()}; {train.updates} updates of "
            f"{train.games} games",
            file=sys.stderr,
            flush=True,
        )

    def run_eval() -> dict[str, Any]:
        result = trainer.evaluate(
            lambda plain: evaluate(game, policy, plain, minimax, games=train.eval_games, seed=train.seed, device=device)
        )
        metrics_log.write({"step": step, **_flat(result)})
        return result

    if latest is None:
        state["last_eval"] = run_eval()
    bar = progress_bar("selfplay", train.updates, step, progress)
    stop = min(train.updates, stop_at) if stop_at else train.updates
    with StopSignal() as signal:  # SIGTERM/Ctrl-C: stop after the update under way, with a checkpoint
        while step < stop:
            rng = np.random.default_rng([train.seed, step])
            plain = par.plain(trainer.model)
            was_training = plain.training
            plain.eval()  # moves and targets as the policy plays (no dropout)
            if rollout:
                tensors, logged = _rollout_batch(game, policy, plain, legal, state, train, step, rng, device)
            else:
                tensors, logged = _reinforce_batch(game, policy, [plain, *snapshots], legal, state, train, rng, device)
            plain.train(was_training)
            result = train_step(trainer, objective, [tensors], step=step, lr=lr_at(step, train.updates, cfg.optim))
            step += 1
            bar.update(1)
            if signal.requested:
                stop = step
            if step % train.log_every == 0:
                metrics_log.write({"step": step, "loss": float(result.loss), **logged})
            if step % train.snapshot_every == 0 and not rollout:  # rollout plays the current policy only
                _save_snapshot(par.plain(trainer.model), out, step)
                state["snapshots"] = (state["snapshots"] + [step])[-train.snapshots :]
                snapshots = [_load_snapshot(family, model_cfg, out, s, device) for s in state["snapshots"]]
            if step % train.eval_every == 0 or step == train.updates:
                state["last_eval"] = run_eval()
                e = state["last_eval"]
                bar.set_postfix(
                    minimax_losses=e["minimax_losses"],
                    random_non_loss=f"{e['random_non_loss_rate']:.3f}",
                    refresh=False,
                )
            if step % train.eval_every == 0 or step == train.updates or step == stop:
                trainer.save(step, record=record, state=state, keep=1)
    bar.close()
    if step == train.updates:
        ckpt_io.write_json_atomic(out / RESULTS, {"game": game.name, "updates": step, **state["last_eval"]})
        plot_curve(out / "metrics.jsonl", out / CURVE, title=f"{game.name} self-play, {train.algorithm} ({cfg.model})")
    return SelfPlayResult(out, step, ckpt_io.latest_checkpoint(out), state["last_eval"], step == train.updates)


def _reinforce_batch(game, policy, models, legal, state, train, rng, device) -> tuple[tuple, dict[str, Any]]:
    """Play one update's games (the current policy models[0] against itself or a snapshot) and return the
    REINFORCE tensors with what to log."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    holders = np.zeros((train.games, 2), dtype=np.int64)
    if len(models) > 1:
        vs_past = rng.random(train.games) < train.snapshot_prob
        seats = rng.integers(2, size=train.games)
        holders[vs_past, seats[vs_past]] = 1 + rng.integers(len(models) - 1, size=int(vs_past.sum()))
    starts = None  # random openings draw from rng only when on: runs without them keep their games
    if train.random_opening:
        lengths = rng.integers(train.random_opening + 1, size=train.games)
        starts = [random_opening(game, rng, int(k)) for k in lengths]
    moves = play_training_games(
        game,
        policy,
        models,
        holders,
        gamma=train.gamma,
        illegal_reward=train.illegal_reward,
        draw_reward=train.draw_reward,
        generator=generator,
        device=device,
        starts=starts,
    )
    advantages = advantages_of(moves, game, state, train)
    ids, last = policy.encode(moves.states)
    tensors = (
        ids,
        last,
        torch.tensor(moves.actions),
        torch.tensor(advantages, dtype=torch.float32),
        legal.stack(moves.states),
    )
    results = np.array(moves.results)
    logged = {
        "win_rate": float((results > 0).mean()),
        "draw_rate": float((results == 0).mean()),
        "illegal_train": moves.illegal / max(1, len(moves.actions)),
        "baseline_seat0": state["baselines"][0],
        "baseline_seat1": state["baselines"][1],
    }
    return tensors, logged


def _rollout_batch(game, policy, model, legal, state, train, step, rng, device) -> tuple[tuple, dict[str, Any]]:
    """Refresh the targets when due, play one update's exploring self-play games (new positions get their
    targets now), and return the cross-entropy tensors of `batch` known positions, with what to log."""
    kw = dict(gamma=train.gamma, draw_reward=train.draw_reward, device=device)
    positions = [tuple(p) for p in state["positions"]]
    if train.refresh and step % train.refresh == 0 and positions:
        state["targets"] = to_bits(best_moves(game, policy, model, legal, positions, **kw))
    lengths = rng.integers(train.random_opening + 1, size=train.games)
    starts = [random_opening(game, rng, int(k)) for k in lengths]
    visited = play_positions(game, policy, model, legal, starts, explore=train.explore, rng=rng, device=device)
    known = set(positions)
    new = [p for p in dict.fromkeys(visited) if p not in known]  # each once, in order of play
    if new:
        positions += new
        state["positions"] = state["positions"] + [list(p) for p in new]
        if train.refresh:
            state["targets"] = state["targets"] + to_bits(best_moves(game, policy, model, legal, new, **kw))
    drawn = rng.integers(len(positions), size=train.batch)
    batch = [positions[i] for i in drawn]
    if train.refresh:
        best = from_bits([state["targets"][i] for i in drawn], len(game.actions))
    else:
        best = best_moves(game, policy, model, legal, batch, **kw)
    ids, last = policy.encode(batch)
    targets = as_targets(best)
    return (ids, last, targets), {"positions": len(positions), "new_positions": len(new)}


def _check_positions(game: Game, state: dict[str, Any], ckpt: Path, *, stored: bool) -> None:
    """A checkpoint's rollout positions must be reachable unfinished positions of the game, each with a
    target naming some of its legal moves when targets are `stored` (state.json is untrusted data)."""
    allowed = {s for s in reachable_states(game) if game.winner(s) is None}
    positions, targets = state["positions"], state["targets"]
    ok = (
        isinstance(positions, list)
        and isinstance(targets, list)
        and len(targets) == (len(positions) if stored else 0)
        and all(isinstance(p, list) and all(type(v) is int for v in p) and tuple(p) in allowed for p in positions)
    )
    ok = ok and all(
        type(t) is int and t > 0 and t & ~sum(1 << a for a in game.legal(tuple(p))) == 0
        for p, t in zip(positions, targets)
    )
    if not ok:
        raise UserError(
            f"checkpoint {ckpt}: state.json's positions are not {game.name} positions with targets; "
            "use an earlier checkpoint"
        )


def _flat(result: dict[str, Any]) -> dict[str, Any]:
    """An evaluation as one metrics record: the per-seat tallies spelled out."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _save_snapshot(model: nn.Module, out: Path, step: int) -> None:
    folder = out / SNAPSHOTS
    folder.mkdir(exist_ok=True)
    tmp = folder / f".step-{step}.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(folder / f"step-{step}.pt")  # whole or absent


def _load_snapshot(family: ModelFamily, model_cfg: Any, out: Path, step: int, device) -> nn.Module:
    model = family.build(model_cfg)
    model.load_state_dict(torch.load(out / SNAPSHOTS / f"step-{step}.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval().requires_grad_(False)


def plot_curve(metrics: Path, png: Path, *, title: str) -> Path:
    """The learning curve: non-loss rate against the random player, losses against minimax, illegal moves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, _ = parse_metrics(metrics)
    evals = [r for r in records if "illegal_rate" in r]
    steps = [r["step"] for r in evals]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for seat in (0, 1):
        rate = [
            1
            - r[f"random_seat{seat}_loss"]
            / (r[f"random_seat{seat}_win"] + r[f"random_seat{seat}_draw"] + r[f"random_seat{seat}_loss"])
            for r in evals
        ]
        top.plot(steps, rate, marker=".", label=f"non-loss rate vs random, seat {seat} ({'X' if seat == 0 else 'O'})")
    top.plot(steps, [r["illegal_rate"] for r in evals], marker=".", label="illegal-move rate (greedy, eval games)")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("rate")
    top.legend(fontsize=8)
    top.set_title(title)
    for seat in (0, 1):
        losses = [
            r[f"minimax_seat{seat}_loss"] / max(1, sum(r[f"minimax_seat{seat}_{k}"] for k in ("win", "draw", "loss")))
            for r in evals
        ]
        bottom.plot(steps, losses, marker=".", label=f"loss share vs minimax (every optimal reply), seat {seat}")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("update")
    bottom.set_ylabel("share of games lost")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)
