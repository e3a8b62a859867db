"""The generation engine: one worker thread owns the model and advances every live choice each round.

    HTTP handlers (event loop)            worker thread
    submit(rows) --> waiting (bounded) --> active (at most max_batch) --> one token per row per round
         ^                                          |
         +---------- events: text piece ... done <--+   (loop.call_soon_threadsafe)

Scheduling is continuous batching: between two rounds, rows that finished
(EOS, a stop string, max_tokens, a full context) or whose client went away
leave the batch and free their cache rows, and waiting rows join, so a long
answer never holds a short one back. Where the family offers a batch that
rows join and leave (`ModelFamily.row_batch`: decoder and T5), a round is ONE
forward pass over all active rows, each at its own position, plus one prefill
of the rows joining in that round; rows of a family without one (pooled, whose
cache holds one sequence's patch state) are advanced one by one by the family's
own decoding loop (`ModelFamily.stream`).

Each row chooses its ids from its own logits with its own settings and its
own seeded generator, created as the single-sequence loops create theirs, so
its text depends only on its prompt, settings and seed, never on what else is
being served (the batch changes a row's logits only by the kernels' summation
order); streamed and non-streamed answers are the same text.

Text leaves a row only when it can no longer become part of a stop string
(the last `len(longest stop) - 1` characters wait), so a stop string is never
streamed and then taken back.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from stlm.api import Model
from stlm.generation.rows import RowBatch
from stlm.generation.sampling import sample_next
from stlm.serve.protocol import Sampling

log = logging.getLogger("stlm.serve")


class QueueFull(Exception):
    """More rows are waiting than the queue holds."""


@dataclass(frozen=True)
class Piece:
    row: int  # the choice index within its request
    text: str


@dataclass(frozen=True)
class Done:
    row: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens or the context is full)
    completion_tokens: int  # ids generated, EOS not counted
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None  # a bug in the worker, reported to this request only


@dataclass(frozen=True)
class TokenLogprob:
    token: bytes  # the id's bytes
    logprob: float  # log-softmax of the model's logits (temperature 1, no filtering), nats
    top: list[tuple[bytes, float]]  # the most likely alternatives at that step, best first


@dataclass
class Row:
    """One choice being generated; `notify` delivers its events to the request's event loop."""

    index: int
    prompt_ids: list[int]
    sampling: Sampling
    seed: int | None
    notify: Callable[[Piece | Done], None]
    stream: bool = True  # False: the text goes out in one piece before Done (no wake-up of the loop per token)
    cancelled: bool = False
    done: bool = False
    tokens: Iterator[int] | None = None  # the family's decoding loop (rows decoded one by one)
    generator: torch.Generator | None = None  # the row's own draws (batched rows); None: greedy
    limit: int = 0  # ids the row may write (max_tokens, or fewer where the context ends)
    newest: int = 0  # the id chosen last, fed to the next step
    ids: list[int] = field(default_factory=list)
    pending: str = ""  # decoded text not yet sent: it may still begin a stop string
    held: str = ""  # final text of a row that does not stream, sent when it ends
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))


class Engine:
    """The worker and its queues. `batch` is the family's `RowBatch`, or None (pooled) to advance
    every row by its family's own loop; setting it to None before `start` forces that per-row
    engine on any family (bench/serve_batching.py compares the two)."""

    def __init__(self, model: Model, *, max_batch: int, queue_size: int) -> None:
        self.model = model
        self.max_batch = max_batch
        self.queue_size = queue_size
        self._cond = threading.Condition()
        self._waiting: deque[Row] = deque()
        self._active: list[Row] = []
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batch: RowBatch | None = model.family.row_batch(model.module)
        self._members: list[Row] = []  # the rows in `batch`, in its row order
        self.on_tokens: Callable[[int], None] = lambda n: None  # metrics hook: ids generated in a round

    # --- control, from any thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stlm-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def pause(self) -> None:
        """Hold every row between steps (rows still queue and cancel): for maintenance and tests."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(active rows, waiting rows)."""
        with self._cond:
            return len(self._active), len(self._waiting)

    def submit(self, rows: list[Row]) -> None:
        with self._cond:
            if len(self._waiting) + len(rows) > self.queue_size:
                raise QueueFull
            self._waiting.extend(rows)
            self._cond.notify_all()

    def cancel(self, rows: list[Row]) -> None:
        """The client went away: its rows leave at the next round (waiting ones at once)."""
        with self._cond:
            for row in rows:
                row.cancelled = True
            self._waiting = deque(r for r in self._waiting if not r.cancelled)
            self._cond.notify_all()

    # --- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not (self._active or self._waiting)):
                    self._cond.wait()
                if self._stopping:
                    return
                joining = []
                while self._waiting and len(self._active) < self.max_batch:
                    joining.append(self._waiting.popleft())
                    self._active.append(joining[-1])
                rows = list(self._active)
            try:
                stepped = self._batched_round(joining) if self.batch is not None else self._one_by_one(rows)
            except Exception as exc:  # a bug outside one row's step: fail the live rows, keep serving
                self._fail(rows, exc)
                if self.batch is not None:
                    self._reset()
                stepped = 0
            self.on_tokens(stepped)
            with self._cond:
                self._active = [r for r in self._active if not r.done]

    def _one_by_one(self, rows: list[Row]) -> int:
        """A round of rows advanced by their family's own loop, one forward each."""
        stepped = 0
        for row in rows:
            if row.cancelled:
                self._close(row)
                continue
            try:
                with self.model.runtime.autocast():
                    stepped += self._step(row)
            except Exception as exc:  # a bug: this request gets a 500, the server goes on
                self._fail([row], exc)
        return stepped

    def _batched_round(self, joining: list[Row]) -> int:
        """A round of the batch: one forward for the rows already in it, one prefill for those joining."""
        assert self.batch is not None
        self._leave()
        chosen: list[tuple[Row, torch.Tensor]] = []
        if self._members:
            ids = torch.tensor([r.newest for r in self._members], device=self.model.device)  # (B,)
            try:
                with self.model.runtime.autocast():
                    logits = self.batch.step(ids)  # (B, V)
            except Exception as exc:  # a bug: these requests get a 500, the server goes on with a fresh batch
                self._fail(self._members, exc)
                self._reset()
            else:
                chosen += zip(self._members, logits)
        for row in joining:
            if row.cancelled:
                self._close(row)
        joining = [r for r in joining if not r.done]
        if joining:
            chosen += self._join(joining)
        stepped = 0
        for row, logits in chosen:
            try:
                stepped += self._take(row, self._choose(row, logits))
            except Exception as exc:
                self._fail([row], exc)
        self._leave()  # finished rows free their cache rows now, not at the next request
        return stepped

    def _join(self, rows: list[Row]) -> list[tuple[Row, torch.Tensor]]:
        """Prefill the joining rows into the batch; their first logits."""
        assert self.batch is not None
        device = self.model.device
        for row in rows:
            s = row.sampling
            row.limit = self.batch.limit(row.prompt_ids, s.max_tokens)
            # As the single-sequence loops make theirs: a seeded generator only when sampling.
            if row.seed is not None and s.temperature > 0:
                row.generator = torch.Generator(device=device).manual_seed(row.seed)
        try:
            with self.model.runtime.autocast():
                logits = self.batch.join([r.prompt_ids for r in rows], [r.limit for r in rows])  # (n, V)
        except ValueError as exc:  # a prompt the model cannot take: checked before anything joined
            self._fail(rows, exc)
            return []
        except Exception as exc:
            self._fail([*self._members, *rows], exc)
            self._reset()
            return []
        self._members += rows
        return list(zip(rows, logits))

    def _leave(self) -> None:
        """Rows that finished, or whose client went away, leave the batch."""
        assert self.batch is not None
        for row in self._members:
            if row.cancelled and not row.done:
                self._close(row)
        keep = [i for i, row in enumerate(self._members) if not row.done]
        if len(keep) < len(self._members):
            self.batch.keep(keep)
            self._members = [self._members[i] for i in keep]

    def _reset(self) -> None:
        self.batch = self.model.family.row_batch(self.model.module)
        self._members = []

    def _fail(self, rows: list[Row], exc: Exception) -> None:
        log.error("generation failed", exc_info=exc)
        for row in rows:
            if not row.done:
                self._close(row)
                row.notify(Done(row.index, "error", len(row.ids), error=f"{type(exc).__name__}: {exc}"))

    def _choose(self, row: Row, logits: torch.Tensor) -> int:
        s = row.sampling
        ids = sample_next(
            logits[None], temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, generator=row.generator
        )
        return int(ids.item())

    def _step(self, row: Row) -> int:
        """Advance a row by its family's own loop by one token; returns 1 if a token was generated."""
        model = self.model
        if row.tokens is None:  # first step: the prefill
            s = row.sampling
            row.limit = s.max_tokens
            row.tokens = model.family.stream(
                model.module,
                row.prompt_ids,
                eos_id=model.tokenizer.eos_id,
                max_new_tokens=s.max_tokens,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                seed=row.seed,
            )
        token = next(row.tokens, None)
        if token is None:  # the loop ended without EOS: the context is full
            self._finish(row, "length")
            return 0
        return self._take(row, token)

    def _take(self, row: Row, token: int) -> int:
        """A row's next id: text out, or the end of the row; returns 1 if it counts as generated."""
        model = self.model
        row.newest = token
        if token == model.tokenizer.eos_id:
            self._finish(row, "stop")
            return 0  # EOS is not counted, as in usage
        row.ids.append(token)
        row.pending += row.decoder.decode(model.tokenizer.decode_bytes([token]))
        if self._cut_at_stop(row):
            self._finish(row, "stop", flush=False)
        elif len(row.ids) >= row.limit:
            self._finish(row, "length")
        else:
            hold = max((len(s) for s in row.sampling.stop), default=1) - 1
            self._send(row, len(row.pending) - hold)
        return 1

    def _cut_at_stop(self, row: Row) -> bool:
        hits = [i for i in (row.pending.find(s) for s in row.sampling.stop) if i >= 0]
        if hits:
            row.pending = row.pending[: min(hits)]
        return bool(hits)

    def _send(self, row: Row, upto: int) -> None:
        if upto > 0:
            text, row.pending = row.pending[:upto], row.pending[upto:]
            if row.stream:
                row.notify(Piece(row.index, text))
            else:
                row.held += text

    def _finish(self, row: Row, reason: str, *, flush: bool = True) -> None:
        if flush:  # a character cut off by the end shows as U+FFFD, as in `Model.generate`
            row.pending += row.decoder.decode(b"", final=True)
            if self._cut_at_stop(row):
                reason = "stop"
        self._send(row, len(row.pending))
        if row.held:
            row.notify(Piece(row.index, row.held))
        self._close(row)
        logprobs = self._logprobs(row) if row.sampling.logprobs is not None else None
        row.notify(Done(row.index, reason, len(row.ids), logprobs))

    def _close(self, row: Row) -> None:
        row.done = True
        if row.tokens is not None and hasattr(row.tokens, "close"):
            row.tokens.close()  # frees the row's cache now, not at garbage collection

    @torch.inference_mode()
    def _logprobs(self, row: Row) -> list[TokenLogprob]:
        """Each generated id's log-probability, by one teacher-forced pass over prompt + answer."""
        if not row.ids:
            return []
        model, module = self.model, self.model.module
        device = self.model.device
        if model.family.encoder_decoder:
            cfg = module.config
            source = torch.tensor([row.prompt_ids], device=device)  # (1, S)
            target_in = torch.tensor([[cfg.decoder_start_id, *row.ids[:-1]]], device=device)  # (1, L)
            mask = torch.ones_like(source, dtype=torch.bool)
            logits = module(source, target_in, mask)[0]  # (L, V)
        else:
            ids = torch.tensor([row.prompt_ids + row.ids[:-1]], device=device)  # (1, T)
            logits = module(ids)[0, len(row.prompt_ids) - 1 :]  # (L, V): the positions that chose the answer
        logp = F.log_softmax(logits.float(), dim=-1)  # (L, V)
        chosen = logp.gather(-1, torch.tensor(row.ids, device=device)[:, None])[:, 0].tolist()  # (L,)
        k = row.sampling.logprobs or 0
        top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())  # (L, k) each
        decode = model.tokenizer.decode_bytes
        return [
            TokenLogprob(decode([t]), lp, [(decode([int(i)]), float(v)) for i, v in zip(ids_k, values_k)])
            for t, lp, ids_k, values_k in zip(row.ids, chosen, top_ids.tolist(), top_values.tolist())
        ]


def request_rows(
    prompt_ids: list[list[int]],
    n: int,
    sampling: Sampling,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue,
    *,
    stream: bool,
) -> list[Row]:
    """The rows of one request, choice index = prompt * n + j; choice j samples with seed + j.

    Without a seed each row draws one, so rows never share torch's global
    generator (whose draws would depend on what else is being served).
    """

    def notify(event: Piece | Done) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the event loop has closed (the server is shutting down): no one is listening
            pass

    rows = []
    for p, ids in enumerate(prompt_ids):
        for j in range(n):
            seed = sampling.seed + j if sampling.seed is not None else secrets.randbits(63)
            rows.append(Row(p * n + j, ids, sampling, seed, notify, stream=stream))
    return rows
