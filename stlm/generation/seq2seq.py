"""Generation from an encoder-decoder (T5) model with explicit caches: greedy, sampling, beam search.

The encoder runs once over the source. The decoder starts from the model's
decoder start id and is fed one token per step; its cache keeps the
self-attention keys and values of earlier steps and the cross-attention keys
and values projected once from the encoder output. Batch size 1: one source.
`generate_seq2seq_batch` runs greedy decoding for many sources at once (right-
padded, masked, rows dropped from the batch as they finish), with each row's
output equal to its own one-source run; it drives a `Seq2SeqRows`, the batch
that a server's rows also join and leave between steps, each at its own
decoder position.
Beam search makes the beams the batch and, after every step, reorders the
cache rows to follow the beams that survived.

Beam search follows Hugging Face transformers' `generate(num_beams=n)` with
its defaults (early_stopping=False), so the two pick the same sequence:
- each step scores the 2n best (beam, token) continuations of the n running
  beams by summed log-probability; those of the first n that end in EOS, or
  reach max_new_tokens, are finished hypotheses with score
  sum / generated_length ** length_penalty (the length counts the EOS);
- the n best continuations that did not finish run on;
- search ends when n hypotheses are finished and the best running beam,
  normalised by its current length, cannot beat the worst of them, or when
  every candidate finished; the best finished hypothesis is returned.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from stlm.generation.rows import CachedRows, inference_step
from stlm.generation.sampling import check_max_new_tokens, check_sampling_args, sample_next
from stlm.models.t5 import T5Cache, T5Model

# What "never" scores, as in the reference: large enough to lose every comparison,
# finite so that adding log-probabilities to it stays ordered.
_NEVER = -1.0e9
# What `decode` gets for the encoder output once the cache holds the cross-attention keys.
_NO_SOURCE = torch.empty(0)


def generate_seq2seq(
    model: T5Model,
    input_ids: list[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
) -> list[int]:
    """The generated token ids for one source (list[int] or LongTensor (S,) / (1, S)).

    The decoder start token is not included; an EOS that ends generation is.
    eos_id defaults to the model's config.eos_id. temperature 0 is greedy;
    num_beams > 1 is beam search (deterministic, so temperature must be 0 and
    top_k / top_p unset).
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if num_beams == 1:
        return list(
            stream_seq2seq(
                model,
                input_ids,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                seed=seed,
                eos_id=eos_id,
            )
        )
    if temperature != 0 or top_k is not None or top_p is not None:
        raise ValueError("beam search is deterministic: use temperature=0 and no top_k / top_p with num_beams > 1")
    source, eos = _prepare(model, input_ids, max_new_tokens, eos_id)
    if max_new_tokens == 0:
        return []
    with inference_step(model):
        return _beam_search(model, source, num_beams, max_new_tokens, float(length_penalty), eos)


def generate_seq2seq_batch(
    model: T5Model, sources: list[list[int]], *, max_new_tokens: int, eos_id: int | None = None
) -> list[list[int]]:
    """Greedy outputs for several sources, each the same as `generate_seq2seq` on that source alone.

    The sources join one `Seq2SeqRows` together and decode as one batch. A row
    that writes EOS is done: its output keeps the EOS, and it leaves the batch
    (its cache rows with it), so finished rows cost nothing. Stops when every
    row is done or after max_new_tokens.
    """
    check_max_new_tokens(max_new_tokens)
    eos = model.config.eos_id if eos_id is None else eos_id
    rows = [list(source) for source in sources]
    if any(not row for row in rows):
        raise ValueError("a source is empty: each needs at least one token (usually ending in EOS)")
    outputs: list[list[int]] = [[] for _ in rows]
    if not rows or max_new_tokens == 0:
        return outputs
    batch = Seq2SeqRows(model)
    live = list(range(len(rows)))  # which source each batch row belongs to
    chosen = batch.join(rows, [max_new_tokens] * len(rows)).argmax(dim=-1)  # (B,)
    for n in range(1, max_new_tokens + 1):
        keep = []
        for i, (row, token) in enumerate(zip(live, chosen.tolist())):
            outputs[row].append(token)
            if token != eos:
                keep.append(i)
        if not keep or n == max_new_tokens:
            break
        if len(keep) < len(live):
            batch.keep(keep)
            chosen = chosen[keep]
            live = [live[i] for i in keep]
        chosen = batch.step(chosen).argmax(dim=-1)  # (b,)
    return outputs


class Seq2SeqRows(CachedRows):
    """Rows of an encoder-decoder decoding as one batch, joining and leaving between steps
    (`stlm.generation.rows.RowBatch`).

    Joining sources are right-padded with a source mask and encoded in one
    pass; their first decoder step (the start id) runs in a cache of their own,
    which fills its cross-attention keys, and that cache is appended to the
    running one (`T5Cache.extend`: source keys padded to the longest source,
    the padding masked). Every step feeds each row's newest id at that row's own
    decoder position (`T5Model.decode(..., positions=)`). Padded keys get the
    dtype's minimum score, whose softmax weight is exactly 0, so a row's numbers
    are its unbatched ones up to the summation order of the kernels.
    """

    def __init__(self, model: T5Model) -> None:
        self.model = model
        self.device = model.embed.weight.device
        self.cache: T5Cache | None = None
        self.last = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,) each row's newest decoder position

    def limit(self, prompt: list[int], max_new_tokens: int) -> int:
        return max_new_tokens  # relative positions: the decoder has no context limit of its own

    def join(self, prompts: list[list[int]], limits: list[int]) -> torch.Tensor:
        if any(not p for p in prompts):
            raise ValueError("a source is empty: each needs at least one token (usually ending in EOS)")
        model, device = self.model, self.device
        width = max(len(p) for p in prompts)
        source = torch.full((len(prompts), width), model.config.pad_id, dtype=torch.long, device=device)  # (n, S)
        for i, prompt in enumerate(prompts):
            source[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prompts], device=device)  # (n,)
        attention_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (n, S)
        start = torch.full((len(prompts), 1), model.config.decoder_start_id, dtype=torch.long, device=device)
        with inference_step(model):
            encoder_out = model.encode(source, attention_mask)  # (n, S, D)
            # The last new id is never fed back: the start id and limit - 1 more fill `limit` slots.
            cache = model.new_cache(len(prompts), max(1, *limits))
            logits = model.decode(start, encoder_out, attention_mask, cache=cache)[:, -1]  # (n, 1, V) -> (n, V)
            if self.cache is None or len(self) == 0:
                self.cache = cache
            else:
                self.cache.extend(cache)
            self.last = torch.cat([self.last, torch.zeros(len(prompts), dtype=torch.long, device=device)])
            return logits

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        assert self.cache is not None, "step before join"
        self.last = self.last + 1
        model = self.model
        with inference_step(model):
            # encoder_out is not read: the cache holds the cross-attention keys of every row.
            if len(self) == 1:  # one row: the single-source step, the cache's length at the row's position
                self.cache.length = int(self.last[0])
                return model.decode(ids[:, None], _NO_SOURCE, cache=self.cache)[:, -1]  # (1, V)
            return model.decode(ids[:, None], _NO_SOURCE, cache=self.cache, positions=self.last)[:, -1]  # (B, V)


def stream_seq2seq(
    model: T5Model,
    input_ids: list[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time (greedy or sampling), ending after EOS or max_new_tokens.

    Arguments are checked here, before the first `next()`. Each step runs in
    eval and inference mode and restores the model's mode before yielding, so
    nothing leaks into the caller's code between tokens.
    """
    check_sampling_args(temperature, top_k, top_p)
    source, eos = _prepare(model, input_ids, max_new_tokens, eos_id)
    return _stream(model, source, max_new_tokens, temperature, top_k, top_p, seed, eos)


def _prepare(
    model: T5Model, input_ids: list[int] | torch.Tensor, max_new_tokens: int, eos_id: int | None
) -> tuple[torch.Tensor, int]:
    check_max_new_tokens(max_new_tokens)
    device = model.embed.weight.device
    if isinstance(input_ids, torch.Tensor):
        if input_ids.ndim == 2 and input_ids.shape[0] != 1:
            raise ValueError(f"one source at a time: input_ids must be (1, S) or (S,), got {tuple(input_ids.shape)}")
        source = input_ids.reshape(1, -1).to(device=device, dtype=torch.long)  # (1, S)
    else:
        source = torch.tensor([list(input_ids)], dtype=torch.long, device=device)  # (1, S)
    if source.shape[1] == 0:
        raise ValueError("input_ids is empty: a source needs at least one token (usually ending in EOS)")
    return source, model.config.eos_id if eos_id is None else eos_id


def _stream(
    model: T5Model,
    source: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    eos: int,
) -> Iterator[int]:
    if max_new_tokens == 0:
        return
    device = source.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None and temperature > 0 else None
    with inference_step(model):
        encoder_out = model.encode(source)  # (1, S, D), once
        cache = model.new_cache(1, max_new_tokens)
    token = model.config.decoder_start_id
    for _ in range(max_new_tokens):
        with inference_step(model):
            step = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)
            logits = model.decode(step, encoder_out, cache=cache)  # (1, 1, V)
            token = int(
                sample_next(
                    logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
                ).item()
            )
        yield token
        if token == eos:
            return


def _beam_search(
    model: T5Model, source: torch.Tensor, n_beams: int, max_new_tokens: int, length_penalty: float, eos: int
) -> list[int]:
    device = source.device
    # The beams share one encoder output: batch 1 here, broadcast by the cross-attention.
    encoder_out = model.encode(source)  # (1, S, D)
    cache = model.new_cache(n_beams, max_new_tokens)
    tokens = torch.full((n_beams, 1), model.config.decoder_start_id, dtype=torch.long, device=device)  # (n, 1)
    # Only beam 0 is live at the start: the n beams are identical, and n copies of
    # its continuations would fill every slot.
    running = torch.full((n_beams,), _NEVER, device=device)
    running[0] = 0.0
    finished: list[tuple[float, list[int]]] = []  # (normalised score, tokens), best first, at most n

    for length in range(1, max_new_tokens + 1):  # generated tokens after this step
        logits = model.decode(tokens[:, -1:], encoder_out, cache=cache)[:, -1].float()  # (n, V)
        vocab = logits.shape[-1]
        scores = (F.log_softmax(logits, dim=-1) + running[:, None]).view(-1)  # (n * V,)
        top_scores, top_index = scores.topk(2 * n_beams)  # (2n,) each, best first
        beam, token = top_index // vocab, top_index % vocab
        done = (token == eos) | (length >= max_new_tokens)  # (2n,)

        # Finished hypotheses: only from the n best candidates; the other n are
        # there so that n beams can run on even when the best ones all ended.
        for j in range(n_beams):
            if done[j]:
                hypothesis = [*tokens[beam[j], 1:].tolist(), int(token[j])]
                finished.append((float(top_scores[j]) / length**length_penalty, hypothesis))
        finished = sorted(finished, key=lambda item: -item[0])[:n_beams]  # stable: earlier wins ties
        if bool(done.all()):
            break

        alive = top_scores + done.float() * _NEVER  # (2n,) finished candidates cannot run on
        keep = alive.topk(n_beams).indices  # (n,)
        running = alive[keep]
        cache.reorder(beam[keep])
        tokens = torch.cat([tokens[beam[keep]], token[keep, None]], dim=1)  # (n, length + 1)

        # Stop once nothing running can beat the worst kept hypothesis, judging
        # the best running beam at its current length (the reference's heuristic).
        if len(finished) == n_beams and float(running[0]) / length**length_penalty <= finished[-1][0]:
            break
    return finished[0][1]
