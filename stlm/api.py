"""The public Python API: load a checkpoint and use it, or train and fine-tune a run.

    import stlm

    m = stlm.load("runs/tiny")                           # a run folder (its newest checkpoint) or a checkpoint
    m.generate("The ", max_new_bytes=200, temperature=0.8)   # a string; stream=True yields text pieces
    m.score(["The sky is blue.", "The sky is green."])    # log-likelihoods in nats
    m.bits_per_byte("Any UTF-8 text.")
    run = stlm.train("recipes/pretrain/decoder-tiny.toml", out="runs/tiny", train={"steps": 300})

Bad input raises `stlm.UserError` with the one-line message the command line
prints for it: the command line and the lm-eval adapter call this module rather
than the pieces below it.

Settings passed as keyword arguments to `train` and `fine_tune` use the keys
of a recipe: a section as a dict (`optim={"lr": 1e-3}`), a top-level setting
by name (`model="decoder-tiny"`), or a dotted key (`**{"optim.lr": 1e-3}`),
the same keys `--set` takes.
"""

from __future__ import annotations

import codecs
import math
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import torch

from stlm import checkpoint as ckpt_io
from stlm import registry
from stlm.config import RunConfig, RuntimeConfig, load_run_config
from stlm.errors import UserError
from stlm.evaluation import tasks, text_bpb
from stlm.evaluation.base import EvalModel, EvalOptions, TaskResult
from stlm.evaluation.record import provenance
from stlm.evaluation.scoring import ContinuationScore
from stlm.families import ModelFamily
from stlm.finetune.config import FinetuneConfig, load_finetune_config
from stlm.finetune.loop import finetune as _finetune
from stlm.finetune.spin import SpinConfig, resolve_task, starting_checkpoint
from stlm.finetune.spin import spin as _spin
from stlm.generation.speculative import SpeculativeStats
from stlm.interop.formats import FORMATS
from stlm.interop.hf_t5 import export_hf_t5 as write_hf_t5
from stlm.interop.hf_t5 import load_hf_t5
from stlm.models.t5 import T5Model
from stlm.runtime import Runtime, check_quantize, resolve_runtime
from stlm.tokenizers import SentencePieceTokenizer, Tokenizer
from stlm.training import loop

__all__ = [
    "Model",
    "Run",
    "UserError",
    "average",
    "export",
    "export_hf_t5",
    "fine_tune",
    "import_hf_t5",
    "load",
    "train",
]

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 0.8
SCORE_BATCH_SIZE = 64  # (context, continuation) pairs per forward pass
BPB_BATCH_SIZE = 8  # windows per forward pass

ConfigSource = str | Path | Mapping[str, Any] | None


# --- loading and using a checkpoint ------------------------------------------------------------


def load(
    path: str | Path,
    device: str | torch.device = "auto",
    threads: int | None = None,
    *,
    precision: str = "auto",
    quantize: str | None = None,
) -> Model:
    """A checkpoint ready for inference: a run folder (its newest checkpoint) or one checkpoint folder.

    device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.
    threads: CPU threads for torch (process-wide); None keeps torch's default.
    precision: auto, fp32, bf16 or fp16 (autocast around generation and scoring); auto is bf16
        on CUDA that has it and, on a CPU, what a measured probe picks (`runtime.cpu_auto_precision`).
    quantize: None / "none", or "int8": every Linear's weights in int8 for fast CPU decoding
        (activations stay fp32; `stlm.generation.quantize`).
    """
    cfg = RuntimeConfig(device=str(device), threads=threads or 0, precision=precision)
    runtime = resolve_runtime(cfg, purpose="generate", quantize=check_quantize(quantize))
    loaded = ckpt_io.load(path, runtime.device)
    loaded.model = loaded.family.quantize(loaded.model, runtime.quantize)
    return Model(loaded, runtime)


class Model:
    """A loaded checkpoint: generate, score, bits per byte, evaluation tasks."""

    def __init__(self, loaded: ckpt_io.LoadedRun, runtime: Runtime) -> None:
        self.loaded = loaded
        self.runtime = runtime
        self.speculative_stats: SpeculativeStats | None = None  # of the last generate(speculative=True)

    def __repr__(self) -> str:
        return f"<stlm.Model {self.loaded.record.model_name} ({self.family.name}) step {self.step} from {self.path}>"

    @property
    def module(self) -> torch.nn.Module:
        """The network itself, in eval mode on `device`."""
        return self.loaded.model

    @property
    def family(self) -> ModelFamily:
        return self.loaded.family

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    @property
    def path(self) -> Path:
        """The checkpoint folder (checkpoints/step-N)."""
        return self.loaded.path

    @property
    def run_dir(self) -> Path:
        return self.loaded.run_dir

    @property
    def step(self) -> int:
        return self.loaded.step

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def n_params(self) -> int:
        """Exact parameter count, tied weights once."""
        return self.family.count_params(self.loaded.model_config)

    @property
    def config(self) -> dict[str, Any]:
        """The checkpoint's resolved run config, as config.json holds it."""
        return self.loaded.record.to_dict()

    # --- generation ------------------------------------------------------------------------------

    @overload
    def generate(
        self,
        prompt: str = ...,
        *,
        max_new_tokens: int | None = ...,
        max_new_bytes: int | None = ...,
        temperature: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        greedy: bool = ...,
        num_beams: int = ...,
        truncate_prompt: bool = ...,
        speculative: bool = ...,
        stream: Literal[False] = ...,
    ) -> str: ...

    @overload
    def generate(
        self,
        prompt: str = ...,
        *,
        max_new_tokens: int | None = ...,
        max_new_bytes: int | None = ...,
        temperature: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        seed: int | None = ...,
        greedy: bool = ...,
        num_beams: int = ...,
        truncate_prompt: bool = ...,
        speculative: bool = ...,
        stream: Literal[True],
    ) -> Iterator[str]: ...

    def generate(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int | None = None,
        max_new_bytes: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        greedy: bool = False,
        num_beams: int = 1,
        truncate_prompt: bool = False,
        speculative: bool = False,
        stream: bool = False,
    ) -> str | Iterator[str]:
        """The text the model writes after `prompt` (the prompt itself is not repeated).

        max_new_tokens / max_new_bytes: one setting under two names (default 256); a byte
        model's tokens are bytes. Generation also stops at EOS.
        temperature: default 0.8; greedy=True (or beam search) decodes deterministically.
        num_beams > 1: beam search, for encoder-decoders (T5); the best sequence comes at once.
        truncate_prompt: a prompt too long for the model's context loses its start, keeping room
            for the new tokens (what lm-eval expects); otherwise it is a UserError.
        speculative: greedy decoding drafted by the multi-token heads of an mtp:K model and
            verified by the model (docs/objectives/mtp.md): the same text as greedy, fewer forwards.
        stream=True returns an iterator of text pieces as they are decoded (incremental UTF-8).
        """
        n = _max_new(max_new_tokens, max_new_bytes)
        if speculative and (temperature not in (None, 0) or num_beams != 1):
            raise UserError("speculative decoding is greedy: it takes no temperature and no beam search")
        if speculative:
            greedy = True
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise UserError(f"num_beams must be an integer >= 1, got {num_beams!r}")
        if greedy and temperature not in (None, 0):
            raise UserError(f"greedy decoding takes no temperature (got {temperature}); pass one or the other")
        if greedy or (temperature is None and num_beams > 1):
            temperature = 0.0
        elif temperature is None:
            temperature = DEFAULT_TEMPERATURE
        ids = self.family.prompt_ids(self.tokenizer, prompt)
        max_len = self.family.max_len(self.loaded.model_config)
        if truncate_prompt and max_len is not None:
            ids = ids[-max(1, max_len - min(n, max_len // 2)) :]  # keep room to write
        try:
            if speculative:
                self.speculative_stats = SpeculativeStats()  # read it after the text is consumed
                tokens = self.family.stream_speculative(
                    self.module, ids, eos_id=self.tokenizer.eos_id, max_new_tokens=n, stats=self.speculative_stats
                )
            else:
                tokens = self.family.stream(
                    self.module,
                    ids,
                    eos_id=self.tokenizer.eos_id,
                    max_new_tokens=n,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    seed=seed,
                    num_beams=num_beams,
                )
        except ValueError as exc:  # bad sampling settings, a prompt longer than the context
            raise UserError(str(exc)) from None
        pieces = _text_pieces(_each_under(self.runtime.autocast, tokens), self.tokenizer)
        return pieces if stream else "".join(pieces)

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, texts: Sequence[str | tuple[str, str]], *, batch_size: int = SCORE_BATCH_SIZE) -> list[float]:
        """Log-likelihood (nats) of each text, or of each continuation after its context.

        A text alone is scored whole (after BOS for a causal model, as a target for T5);
        a (context, continuation) pair scores the continuation given the context.
        """
        return [s.logprob for s in self.score_pairs(_as_pairs(texts), batch_size=batch_size)]

    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = SCORE_BATCH_SIZE, progress: bool = False
    ) -> list[ContinuationScore]:
        """log P(continuation | context) with its units, bytes and whether it is the greedy choice.

        An empty continuation has log-probability 0 and counts as greedy.
        """
        pairs = _as_pairs(pairs)
        todo = [i for i, (_, continuation) in enumerate(pairs) if continuation]
        scores = [ContinuationScore(0.0, 0, 0, True)] * len(pairs)
        scorer = self.scorer(batch_size=batch_size, progress=progress)
        for i, score in zip(todo, scorer.score([pairs[i] for i in todo])):
            scores[i] = score
        return scores

    def bits_per_byte(
        self, text: str, *, context: int | None = None, stride: int | None = None, batch_size: int = BPB_BATCH_SIZE
    ) -> float:
        """Bits per byte of `text`, scored as `stlm evaluate --file` scores a file's text.

        context: window length in ids (default: the training seq_len); stride: window step
        (default: context / 2). Causal models only.
        """
        options = EvalOptions(context=context, stride=stride)
        result = text_bpb.run_text(self.scorer(batch_size=batch_size), options, text)
        return result.metrics["bits_per_byte"]

    def evaluate(
        self, task: str = "bpb", *, batch_size: int | None = None, progress: bool = False, **options: Any
    ) -> TaskResult:
        """Run an evaluation task (bpb, wikitext2, blimp, piqa or mc:PATH) on this checkpoint.

        options are `stlm.evaluation.base.EvalOptions`: data_dir (None: BLiMP, PIQA and
        WikiText-2 from the Hugging Face Hub, cached), hf_cache_dir, limit, file, corpus, split,
        context, stride, max_ids. batch_size: items per forward pass (default: by task).
        """
        try:
            eval_options = EvalOptions(**options)
        except TypeError:
            known = ", ".join(EvalOptions.__dataclass_fields__)
            raise UserError(f"unknown evaluation option(s) {', '.join(sorted(options))}; options: {known}") from None
        size = tasks.default_batch_size(task) if batch_size is None else batch_size
        return tasks.run_task(task, self.scorer(batch_size=size, progress=progress), eval_options)

    def document(self, result: TaskResult) -> tuple[dict[str, Any], str]:
        """The JSON record and markdown page of an evaluation result, with its provenance."""
        prov = provenance(
            model=self.module,
            config=self.config,
            checkpoint=self.path,
            data_files=result.data_files,
            settings=result.settings,
            device=self.runtime.describe(),
        )
        return result.document(prov)

    def scorer(self, *, batch_size: int = SCORE_BATCH_SIZE, progress: bool = False) -> EvalModel:
        """This checkpoint as the evaluation tasks take it."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size!r}")
        return EvalModel(
            self.module,
            self.tokenizer,
            self.family,
            self.config,
            device=self.device,
            autocast=self.runtime.autocast,
            batch_size=batch_size,
            progress=progress,
        )


def _max_new(max_new_tokens: int | None, max_new_bytes: int | None) -> int:
    if max_new_tokens is not None and max_new_bytes is not None and max_new_tokens != max_new_bytes:
        raise UserError(
            f"max_new_tokens ({max_new_tokens}) and max_new_bytes ({max_new_bytes}) name one setting; give one"
        )
    n = max_new_tokens if max_new_tokens is not None else max_new_bytes
    n = DEFAULT_MAX_NEW_TOKENS if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"max_new_tokens must be an integer >= 1, got {n!r}")
    return n


def _each_under(context: Callable[[], AbstractContextManager[Any]], items: Iterator[int]) -> Iterator[int]:
    """`items`, each one computed inside `context()` (bf16 autocast, or nothing in fp32), left
    before it is yielded: autocast is a thread-local switch that must not stay on in the caller's
    code between tokens, as generation's inference mode does not."""
    while True:
        with context():
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def _text_pieces(tokens: Iterator[int], tokenizer: Tokenizer) -> Iterator[str]:
    """Text as the tokens arrive: UTF-8 decoded incrementally, so a character split across tokens waits."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for token in tokens:
            piece = decoder.decode(tokenizer.decode_bytes([token]))
            if piece:
                yield piece
    except ValueError as exc:
        raise UserError(str(exc)) from None
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _as_pairs(texts: Sequence[str | tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(texts, str):
        raise UserError("score takes a list of texts or (context, continuation) pairs; for one text pass [text]")
    pairs = []
    for item in texts:
        if isinstance(item, str):
            pairs.append(("", item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
            pairs.append((item[0], item[1]))
        else:
            raise UserError(f"score takes texts or (context, continuation) pairs of strings, got {item!r}")
    return pairs


# --- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A training or fine-tuning run as it ended."""

    dir: Path
    step: int  # the last step trained
    checkpoint: Path  # what `load()` opens: the newest checkpoint, or a fine-tuning run's best one
    val: dict[str, float]  # pretraining: the last validation metrics; fine-tuning: the best model's final scores
    interrupted: bool = False  # stopped before its last step (Ctrl-C, SIGTERM or stop_at); resume it
    best_step: int | None = None  # fine-tuning: the step of the best checkpoint
    results: dict[str, Any] = field(default_factory=dict)  # fine-tuning: what results.json holds

    def load(
        self,
        device: str | torch.device = "auto",
        threads: int | None = None,
        *,
        precision: str = "auto",
        quantize: str | None = None,
    ) -> Model:
        return load(self.checkpoint, device, threads, precision=precision, quantize=quantize)


def train(
    config: RunConfig | ConfigSource = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    **settings: Any,
) -> Run:
    """Pretrain a model; returns the run.

    config: a RunConfig, a dict shaped like a recipe, a recipe file (.toml or .json), or None
    for the defaults; `settings` override it (see the module docstring). out: the run folder
    (default runs/<model>-<time>). resume: a run folder to continue instead, from its newest
    checkpoint; it takes no config or out, and `settings` may change only what a resumed run
    may (`stlm.training.loop.RESUME_SAFE_KEYS`, e.g. train={"steps": 2000} to extend it).
    stop_at: stop with a checkpoint after this step.
    """
    overrides = _dotted(settings)
    if resume is not None:
        _check_resume(config, out)
        result = loop.resume(resume, overrides=overrides, stop_at=stop_at, progress=progress)
    else:
        cfg = _run_config(config).with_overrides(overrides, source="overrides")
        # A run that continues a checkpoint is named after that checkpoint's run folder.
        name = ckpt_io.run_folder(Path(cfg.model)).name if Path(cfg.model).exists() else cfg.model
        run_dir = Path(out) if out is not None else Path("runs") / f"{name}-{_timestamp()}"
        result = loop.train(cfg, run_dir, stop_at=stop_at, progress=progress)
    return Run(result.run_dir, result.step, result.checkpoint, dict(result.val or {}), result.interrupted)


def fine_tune(
    config: FinetuneConfig | ConfigSource = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    **settings: Any,
) -> Run:
    """Fine-tune on a text-to-text task; returns the run, whose checkpoint is the best one.

    (Named fine_tune because `stlm.finetune` is the subpackage.) config: a FinetuneConfig,
    a dict shaped like a fine-tuning recipe, a recipe file, or None for the defaults;
    `settings` override it. Giving task.train_file clears the built-in task and the other way
    round, as --train and --task do. out: default runs/finetune-<task>-<time>. resume: as
    for `train`.
    """
    overrides = _dotted(settings)
    if resume is not None:
        _check_resume(config, out)
        result = _finetune(FinetuneConfig(), resume, resume=True, overrides=overrides, progress=progress)
    else:
        if "task.train_file" in overrides:  # your own data replaces the built-in task
            overrides.setdefault("task.name", "")
        elif "task.name" in overrides:
            overrides.setdefault("task.train_file", None)
        cfg = _finetune_config(config).with_overrides(overrides, source="overrides")
        run_dir = Path(out) if out is not None else Path("runs") / f"finetune-{cfg.task.name or 'data'}-{_timestamp()}"
        result = _finetune(cfg, run_dir, progress=progress)
    scores = {k: float(v) for k, v in result.results["finetuned"].items() if isinstance(v, (int, float))}
    return Run(
        result.out, result.step, result.best_checkpoint, scores, best_step=result.best_step, results=result.results
    )


def spin(
    run: str | Path | None = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    **settings: Any,
) -> Run:
    """SPIN self-play fine-tuning of a fine-tuned run (its best checkpoint) on its own task, or on the
    task that `task` settings name (task={"name": ...} or task={"train_file": ...}); returns the run,
    whose `results["iterations"]` holds one row per iteration. out: default runs/spin-<task>-<time>.
    resume: a SPIN run folder to continue (then pass no run or out). stop_at: stop after this step
    with a resumable checkpoint (the run is then `interrupted`).
    """
    overrides = _dotted(settings)
    if resume is not None:
        _check_resume(run, out)
        result = _spin(None, None, resume, resume=True, overrides=overrides, stop_at=stop_at, progress=progress)
    else:
        if run is None:
            raise UserError("SPIN needs a fine-tuned run to start from (stlm spin RUN)")
        given = {k[len("task.") :]: v for k, v in overrides.items() if k.startswith("task.")}
        task = resolve_task(str(run), given)
        rest = {k: v for k, v in overrides.items() if not k.startswith("task.")}
        run_dir = Path(out) if out is not None else Path("runs") / f"spin-{task.name or 'data'}-{_timestamp()}"
        result = _spin(SpinConfig(init=str(run)), task, run_dir, overrides=rest, stop_at=stop_at, progress=progress)
    last = result.results["iterations"][-1]
    scores = {k: float(v) for k, v in last.items() if isinstance(v, (int, float))}
    return Run(
        result.out, result.step, result.checkpoint, scores, interrupted=not result.finished, results=result.results
    )


# --- weight averaging ----------------------------------------------------------------------------


def average(models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> Run:
    """Checkpoints of one architecture averaged weight by weight into a new run folder `out`.

    Each of `models` is a run folder (a fine-tuning run's best checkpoint, else its newest) or a
    checkpoint. Fine-tunes of one starting model average into one model (a "model soup"), as do a
    run's last checkpoints. `weights`: positive numbers, scaled to sum to 1 (default: equal). The
    new checkpoint keeps the first model's record (its task and labels) and names every source.
    """
    if len(models) < 2:
        raise UserError(f"averaging takes at least two runs or checkpoints, got {len(models)}")
    given = [Path(m) for m in models]
    shares = _average_weights(weights, len(given))
    ckpts = [starting_checkpoint(str(m)) for m in given]
    seen: dict[Path, Path] = {}
    for m, ckpt in zip(given, ckpts, strict=True):
        if ckpt.resolve() in seen:
            raise UserError(f"{m} and {seen[ckpt.resolve()]} are the same checkpoint ({ckpt}); give it once")
        seen[ckpt.resolve()] = m
    runs = [r for c in ckpts if (r := ckpt_io.run_of(c)) is not None]
    out = Path(out)
    ckpt_io.check_output(out, reads=[*given, *ckpts, *runs])
    with ckpt_io.run_lock(out):
        if ckpt_io.list_checkpoints(out):
            raise UserError(f"{out} already holds checkpoints; choose another --out")
        first = ckpt_io.load(ckpts[0])
        _check_same_model(first, ckpts[1:])
        state = first.model.state_dict()
        mixed = {name: t.double() * shares[0] for name, t in state.items() if t.is_floating_point()}
        for ckpt, share in zip(ckpts[1:], shares[1:], strict=True):
            for name, tensor in ckpt_io.load(ckpt).model.state_dict().items():
                if name in mixed:
                    mixed[name] += tensor.double() * share
                elif not torch.equal(tensor, state[name]):  # integer buffers are kept, so must agree
                    raise UserError(f"{ckpt} and {ckpts[0]} differ in {name}, which holds integers and cannot average")
        first.model.load_state_dict(
            {name: mixed[name].to(t.dtype) if name in mixed else t for name, t in state.items()}
        )
        sources = {"averaged": [str(c.resolve()) for c in ckpts], "weights": shares}
        record = replace(first.record, sections={**first.record.sections, "source": sources})
        ckpt = ckpt_io.save_checkpoint(out, 0, model=first.model, optimizer=None, config=record, state={}, keep=1)
    return Run(out, 0, ckpt, {})


def _average_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """`weights` scaled to sum to 1 (equal shares when None); a UserError for a wrong count or a weight <= 0."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise UserError(f"give one weight per model: {n} models, {len(weights)} weights")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise UserError(f"weights must be positive numbers, got {' '.join(f'{w:g}' for w in weights)}")
    return [w / sum(weights) for w in weights]


def _check_same_model(first: ckpt_io.LoadedRun, others: Sequence[Path]) -> None:
    """A UserError naming the difference unless every other checkpoint is the same model as `first`
    with the same tokenizer (and, fine-tuned on classification, the same labels)."""
    mine = first.record
    a = registry.config_to_dict(mine.family.name, mine.model_config)
    for ckpt in others:
        theirs = ckpt_io.read_record(ckpt / "config.json")
        b = registry.config_to_dict(theirs.family.name, theirs.model_config)
        if a != b:
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise UserError(
                f"{ckpt} is another model than {first.path} (model_config differs in {', '.join(diff)}); "
                "only checkpoints of one architecture average"
            )
        if theirs.tokenizer != mine.tokenizer:
            raise UserError(f"{ckpt} and {first.path} use different tokenizers; only checkpoints of one model average")
        framed = [(r.sections.get("finetune") or {}).get("task") for r in (mine, theirs)]
        if isinstance(framed[0], dict) and isinstance(framed[1], dict):  # two fine-tunes: one task, framed alike
            for key in ("kind", "direction", "separator"):
                if framed[0].get(key) != framed[1].get(key):
                    raise UserError(
                        f"{ckpt} was fine-tuned with {key} {framed[1].get(key)!r} and {first.path} with "
                        f"{framed[0].get(key)!r}; averaged fine-tunes must frame their task alike"
                    )
        ours, other = ((r.sections.get("task") or {}).get("labels") for r in (mine, theirs))
        if isinstance(ours, list) and isinstance(other, list) and set(ours) != set(other):
            raise UserError(
                f"{ckpt} was fine-tuned on the labels ({', '.join(map(str, other))}) and {first.path} on "
                f"({', '.join(map(str, ours))}); averaged classifiers must share one label set"
            )


# --- Hugging Face T5 ----------------------------------------------------------------------------


def import_hf_t5(directory: str | Path, out: str | Path) -> Run:
    """A Hugging Face T5 directory (config.json, weights, spiece.model if present) as a new run folder `out`."""
    directory, out = Path(directory), Path(out)
    ckpt_io.check_output(out, reads=[directory])
    with ckpt_io.run_lock(out):
        return _import_hf_t5(directory, out)


def _import_hf_t5(directory: Path, out: Path) -> Run:
    if ckpt_io.list_checkpoints(out):
        raise UserError(f"{out} already holds checkpoints; choose another --out")
    model, cfg, spiece = load_hf_t5(directory)
    family = registry.get_family("t5")
    out.mkdir(parents=True, exist_ok=True)
    if spiece is not None:  # save_checkpoint copies it into the checkpoint, which names it relatively
        tokenizer = {"name": "spiece", "spec": f"spiece:{spiece.resolve()}"}
    else:
        try:
            tokenizer = {"name": family.default_tokenizer(cfg)}  # ByT5's bytes for a small vocabulary
        except UserError:  # a SentencePiece vocabulary without its spiece.model: weights only
            tokenizer = {"name": "none", "note": "no spiece.model found"}
    record = ckpt_io.RunRecord(family, cfg, tokenizer, {"source": {"hf_directory": str(directory.resolve())}})
    ckpt = ckpt_io.save_checkpoint(out, 0, model=model, optimizer=None, config=record, state={}, keep=1)
    return Run(out, 0, ckpt, {})


def export_hf_t5(path: str | Path, out: str | Path) -> Path:
    """A T5 checkpoint (or run folder) written in Hugging Face format into `out`; transformers loads it."""
    loaded = ckpt_io.load(path)
    ckpt_io.check_output(Path(out), reads=[loaded.path, loaded.run_dir])
    if not isinstance(loaded.model, T5Model):
        raise UserError(f"{loaded.path} is not a T5 checkpoint; only T5 models export to Hugging Face format")
    # The loaded tokenizer's own file (inside the checkpoint's folder), never a path the record names.
    spiece = loaded.tokenizer.model_file if isinstance(loaded.tokenizer, SentencePieceTokenizer) else None
    return write_hf_t5(loaded.model, out, spiece=spiece, tokenizer=loaded.tokenizer)


# --- export to other runtimes -------------------------------------------------------------------


def export(path: str | Path, out: str | Path, format: str, dtype: str | None = None) -> Path:
    """A checkpoint (or run folder) written for another runtime into the new folder `out`.

    format: gguf (llama.cpp; decoders), hf (transformers; decoders as Llama, T5), ct2
    (CTranslate2; decoders, T5) or onnx (ONNX Runtime with past key values; decoders, T5). dtype: the
    format's number type (gguf f32 f16 q8_0; hf f32 f16 for decoders; ct2 int8 float32 float16;
    onnx f32), default the first. The folder is filled under a temporary name beside `out` and
    renamed into place, so an interrupted export leaves no half folder; `out` must not exist
    (an empty folder is allowed) nor lie inside the run it reads.
    """
    out = Path(out)
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    # Where it writes is checked before the weights are read: a mistake costs no model load.
    ckpt = ckpt_io.resolve_checkpoint(path)
    run_dir = ckpt_io.run_folder(ckpt)
    ckpt_io.check_output(out, reads=[ckpt, run_dir])
    if run_dir.resolve() in (out.resolve(), *out.resolve().parents):
        raise UserError(f"--out {out} lies inside the run {run_dir} it exports; choose a folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists; choose a new folder")
    exporter = ckpt_io.RunRecord.from_dict(ckpt_io.load_config(ckpt), folder=ckpt).family.exporter(format)
    dtype = exporter.dtypes[0] if dtype is None else dtype
    if dtype not in exporter.dtypes:
        raise UserError(
            f"--dtype {dtype} is not one {format} export takes for this model: {', '.join(exporter.dtypes)}"
        )
    loaded = ckpt_io.load(ckpt)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the folder gets the user's usual permissions (umask), not mkdtemp's 0700.
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        exporter.write(loaded.model, loaded.tokenizer, tmp, dtype)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Recipe-shaped settings as dotted keys: {"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}.

    As in a recipe, a [model] table's `name` is the preset and its other keys are architecture
    settings: {"model": {"name": "pooled-tiny", "boundary": "entropy"}} -> {"model": "pooled-tiny",
    "model.boundary": "entropy"}.
    """
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            table = dict(value)
            if not prefix and key == "model" and "name" in table:
                out["model"] = table.pop("name")
            out.update(_dotted(table, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _check_resume(config: object, out: object) -> None:
    if config is not None or out is not None:
        raise UserError("resume continues a run with its recorded config and folder; pass no config or out with it")


def _run_config(config: RunConfig | ConfigSource) -> RunConfig:
    if config is None:
        return RunConfig()
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, Mapping):
        return RunConfig.from_dict(dict(config))
    if isinstance(config, (str, Path)):
        return load_run_config(config)
    raise UserError(f"config must be a RunConfig, a dict or a recipe path, got {type(config).__name__}")


def _finetune_config(config: FinetuneConfig | ConfigSource) -> FinetuneConfig:
    if config is None:
        return FinetuneConfig()
    if isinstance(config, FinetuneConfig):
        return config
    if isinstance(config, Mapping):
        return FinetuneConfig.from_dict(dict(config))
    if isinstance(config, (str, Path)):
        return load_finetune_config(config)
    raise UserError(f"config must be a FinetuneConfig, a dict or a recipe path, got {type(config).__name__}")


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
