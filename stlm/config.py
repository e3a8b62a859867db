"""Typed run configuration: what to train, on what, how, and where.

Config flows one way: recipe file (TOML or JSON) and CLI flags -> `RunConfig`
-> the registry resolves the model preset -> model -> runtime -> training loop.
The fully resolved config (including the model's own config) is written next
to every output and stored in every checkpoint.

Every section is a flat dataclass of plain values so a recipe is readable data:

    model = "decoder-tiny"
    [data]
    source = "pydocs"
    seq_len = 256
    [optim]
    lr = 3e-3
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stlm.errors import UserError

SCHEDULES = ("cosine", "wsd", "constant", "inverse-sqrt")
OPTIMIZERS = ("adamw", "adamw-rms", "adafactor")
OBJECTIVES = ("next-token", "span-corruption")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PARALLEL = ("auto", "none", "ddp", "fsdp")


_Config = TypeVar("_Config", bound="SectionedConfig")


class SectionedConfig:
    """What every top-level config (a dataclass of plain sections) does with plain data: out with
    `to_dict`, in with `from_dict` (naming any unknown key or bad value), and `with_overrides`
    for dotted keys (`optim.lr`). A config with its own rules (RunConfig's [model] table) overrides them."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_Config], raw: dict[str, Any], *, source: str = "config") -> _Config:
        return config_from_dict(cls, raw, source=source)

    def with_overrides(self: _Config, overrides: dict[str, Any], *, source: str = "command line") -> _Config:
        """A copy with dotted keys (`optim.lr`, `model`) replaced."""
        return apply_overrides(self, overrides, source=source)


@dataclass
class DataConfig:
    source: str = "pydocs"  # built-in corpus name, a path, or hf:NAME[:CONFIG]
    text_field: str = "text"  # JSONL / HF field holding the text
    val_fraction: float = 0.05  # share of documents held out for validation (split by a hash of each document)
    split_seed: int = 0  # seed of the document hash that splits train from validation
    seq_len: int = 256  # tokens per training window (span corruption: encoder input length)
    tokenizer: str = "auto"  # auto (from the model family) | byte | byt5 | spiece:PATH | bpe:PATH/tokenizer.json
    cache_dir: str | None = None  # None: the user cache directory
    workers: int = 1  # tokenizer processes when building the token cache (0: one per core); same files either way
    streaming: bool = False  # hf:NAME sources: read rows as they arrive instead of downloading the dataset first
    max_documents: int = 0  # keep only the first N documents of the source (0: all)

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 0.5, "data.val_fraction must be in (0, 0.5)")
        _check(self.workers >= 0 and self.max_documents >= 0, "data.workers and data.max_documents must be >= 0")
        _check(self.seq_len >= 2, "data.seq_len must be at least 2")
        _check(-(2**63) <= self.split_seed < 2**63, "data.split_seed must fit in 64 bits (|seed| < 2**63)")


@dataclass
class ObjectiveConfig:
    name: str = "next-token"  # next-token (decoders) | span-corruption (T5) | mtp:K (K-byte multi-token prediction)
    noise_density: float = 0.15  # span corruption: share of tokens masked
    mean_span: float = 3.0  # span corruption: mean noise span length (ByT5 uses 20)
    mtp_weights: str = ""  # mtp:K: comma-separated loss weight of heads 1..K (next byte first); "": all 1
    mtp_curriculum: float = 0.0  # mtp:K: share of the steps trained on the next-byte head alone first

    def __post_init__(self) -> None:
        _check(
            self.name in OBJECTIVES or self.name.startswith("mtp:"),
            f"objective.name must be one of {', '.join(OBJECTIVES)} or mtp:K, got {self.name!r}",
        )
        _check(0.0 < self.noise_density < 1.0, "objective.noise_density must be in (0, 1)")
        _check(self.mean_span >= 1.0, "objective.mean_span must be >= 1")
        _check(0.0 <= self.mtp_curriculum < 1.0, "objective.mtp_curriculum must be in [0, 1)")
        if self.name.startswith("mtp:"):
            self.mtp_loss_weights()  # K and the weights checked when the run is configured

    @property
    def mtp_k(self) -> int:
        """K of mtp:K (heads predicting 1..K ids ahead); 1 for the other objectives."""
        if not self.name.startswith("mtp:"):
            return 1
        k = self.name[len("mtp:") :]
        _check(
            k.isdigit() and int(k) >= 2,
            f"objective mtp:K needs an integer K >= 2 (heads 1..K ahead), got {self.name!r}",
        )
        return int(k)

    def mtp_loss_weights(self) -> tuple[float, ...]:
        """Loss weight of each of the K heads, the next-byte head first."""
        k = self.mtp_k
        if not self.mtp_weights.strip():
            return (1.0,) * k
        try:
            weights = tuple(float(w) for w in self.mtp_weights.split(","))
        except ValueError:
            weights = ()
        _check(
            len(weights) == k and all(w >= 0 for w in weights) and weights[0] > 0,
            f"objective.mtp_weights must be {k} comma-separated numbers >= 0 (the first > 0) for {self.name}, "
            f"got {self.mtp_weights!r}",
        )
        return weights


KD_CACHE_DTYPES = ("fp16", "fp32")


@dataclass
class DistillConfig:
    teacher: str | None = None  # run or checkpoint folder of a teacher with the same tokenizer; None: no distillation
    alpha: float = 0.5  # weight of the distillation term; the hard next-token loss gets 1 - alpha
    temperature: float = 2.0  # softens teacher and student distributions; the term is scaled by T^2
    reverse: bool = False  # reverse KL(student || teacher) instead of the forward KL(teacher || student)
    # (with a cache every epoch cuts the same windows, in a new order: a stored output fits only its window)
    cache: str | None = None  # folder for the teacher's outputs: computed once, read back on later epochs
    cache_topk: int = 0  # with --kd-cache: keep the K most likely ids per position, the rest spread evenly; 0: all
    cache_dtype: str = "fp16"  # with --kd-cache: fp16 (half the size) | fp32 (the live teacher's values exactly)

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha <= 1.0, "distill.alpha (--kd-alpha) must be in [0, 1]")
        _check(self.temperature > 0, "distill.temperature (--kd-temperature) must be positive")
        _check(self.cache_topk >= 0, "distill.cache_topk (--kd-topk) must be >= 0 (0 keeps every id)")
        _check(
            self.cache_dtype in KD_CACHE_DTYPES,
            f"distill.cache_dtype (--kd-cache-dtype) must be one of {', '.join(KD_CACHE_DTYPES)}",
        )
        _check(
            self.cache is None or self.teacher is not None,
            "--kd-cache stores a teacher's outputs: name the teacher with --teacher",
        )


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adamw-rms (updates scaled by weight RMS, nanoT5) | adafactor (T5)
    lr: float = 3e-3  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    weight_decay: float = 0.1  # applied to matrices only (ndim >= 2)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    eps: float = 1e-8  # AdamW denominator epsilon
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant | inverse-sqrt
    warmup_steps: int | None = None  # None: warmup_fraction of the run's steps (fixed when the run starts)
    warmup_fraction: float = 0.1  # used when warmup_steps is None, so short runs warm up briefly and still decay
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly

    def __post_init__(self) -> None:
        _check(self.name in OPTIMIZERS, f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        _check(self.lr > 0, "optim.lr must be positive")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]")
        _check(self.weight_decay >= 0, "optim.weight_decay must be >= 0")
        _check(0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "optim betas must be in [0, 1)")
        _check(0.0 < self.eps < 1.0, "optim.eps must be in (0, 1)")
        _check(self.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 disables clipping)")
        _check(
            self.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
        )
        _check(self.warmup_steps is None or self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _check(0.0 <= self.warmup_fraction < 1.0, "optim.warmup_fraction must be in [0, 1)")
        _check(0.0 < self.decay_fraction <= 1.0, "optim.decay_fraction must be in (0, 1]")


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 0  # model init and data order
    log_every: int = 10  # steps between training records in metrics.jsonl and the progress bar
    eval_every: int = 250  # 0: only at the end
    eval_tokens: int = 131072  # validation tokens scored at each periodic evaluation
    save_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 2  # the newest K complete checkpoints are kept
    nonfinite_skips: int = 3  # consecutive steps with a NaN/inf loss or gradient skipped before the run stops
    tensorboard: bool = False  # also write TensorBoard events to RUN_DIR/tensorboard (pip install stlm[tensorboard])

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_tokens", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        _check(self.nonfinite_skips >= 0, "train.nonfinite_skips must be >= 0 (0 stops at the first non-finite loss)")
        _check(self.eval_every >= 0 and self.save_every >= 0, "train.eval_every and train.save_every must be >= 0")
        _check(0 <= self.seed < 2**63, "train.seed must be in [0, 2**63)")


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (CUDA: bf16 if supported; CPU: a cached bf16-vs-fp32 probe decides) | fp32 | bf16 | fp16 (gradient scaler)
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    parallel: str = "auto"  # under torchrun: auto (= ddp) | ddp | fsdp; none refuses several processes
    compile: bool = False  # torch.compile the model (slow to start; pays off on GPUs and long runs)
    activation_checkpointing: bool = False  # recompute block activations in backward: less memory, ~1/3 more compute
    tf32: bool = True  # CUDA: TF32 tensor cores for fp32 matmuls
    tune_malloc: bool = False  # CPU on Linux: keep freed activation memory in the process (runtime.tune_cpu_allocator)

    def __post_init__(self) -> None:
        _check(
            self.parallel in PARALLEL, f"runtime.parallel must be one of {', '.join(PARALLEL)}, got {self.parallel!r}"
        )
        _check(
            self.precision in PRECISIONS,
            f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _check(self.threads >= 0, "runtime.threads must be >= 0")


@dataclass
class RunConfig(SectionedConfig):
    """A whole pretraining run. The model is a preset name plus, optionally, architecture
    settings changed from it (`arch`), written in a recipe as

        [model]
        name = "pooled-tiny"
        boundary = "entropy"

    or on the command line as `--set model.boundary=entropy` (`model = "pooled-tiny"`
    alone still works). The family row checks the settings (`ModelFamily.with_arch`).
    """

    model: str = "decoder-tiny"  # a preset name from `stlm models`, or a run / checkpoint folder to continue
    arch: dict[str, Any] = field(default_factory=dict)  # model.<key> settings changed from the preset
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> RunConfig:
        """Build a run config from plain data, naming any unknown key or bad value."""
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict):  # a [model] table: name + settings
            table = dict(raw["model"])
            if "name" not in table:
                raise UserError(f"{source}: the [model] table needs name = PRESET (see `stlm models`)")
            arch = raw.get("arch") or {}
            if not isinstance(arch, dict):
                raise UserError(f"{source}: arch must be a table of model settings, got {type(arch).__name__}")
            raw = {**raw, "model": table.pop("name"), "arch": {**arch, **table}}
        return config_from_dict(cls, raw, source=source)

    def with_overrides(self, overrides: dict[str, Any], *, source: str = "command line") -> RunConfig:
        """A copy with dotted keys (`optim.lr`, `model`, `model.d_model`) replaced."""
        return apply_overrides(self, {arch_key(k): v for k, v in overrides.items()}, source=source)


def arch_key(dotted: str) -> str:
    """`model.<setting>` is how users name an architecture setting; it is stored under `arch`."""
    return "arch." + dotted[len("model.") :] if dotted.startswith("model.") else dotted


def config_from_dict(cls: type, raw: dict[str, Any], *, source: str = "config") -> Any:
    """Any config dataclass of plain sections from plain data, naming any unknown key or bad value."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a table of settings, got {type(raw).__name__}")
    return _build(cls, raw, source, prefix="")


def apply_overrides(cfg: Any, overrides: dict[str, Any], *, source: str = "command line") -> Any:
    """A copy of a config dataclass with dotted keys (`optim.lr`, `model`) replaced."""
    merged = asdict(cfg)
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        target = merged
        if section:
            if section not in merged or not isinstance(merged[section], dict):
                raise UserError(f"{source}: unknown setting {dotted!r} (sections: {', '.join(_sections(type(cfg)))})")
            target = merged[section]
        if key not in target and not _is_table(type(cfg), section):
            raise UserError(f"{source}: unknown setting {dotted!r}")
        target[key] = value
    return config_from_dict(type(cfg), merged, source=source)


def apply_resume_overrides(cfg: Any, overrides: dict[str, Any], safe_keys: tuple[str, ...], *, run_dir: Any) -> Any:
    """`cfg` (a resumed run's own config) with `overrides` applied, when each is in `safe_keys`
    or leaves its setting as it was; a UserError naming the first that would change anything else."""
    for key, value in overrides.items():
        if key not in safe_keys and cfg.with_overrides({key: value}, source="--resume") != cfg:
            raise UserError(
                f"{key} cannot change when resuming {run_dir} (its checkpoints were trained with the run's own); "
                f"on resume only {', '.join(safe_keys)} may change: start a new run to change {key}"
            )
    return cfg.with_overrides(overrides, source="--resume")


def _sections(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.default_factory)]  # type: ignore[arg-type]


def _is_table(cls: type, name: str) -> bool:
    """A free-form table field (dict), whose keys are checked by whoever reads it."""
    hint = typing.get_type_hints(cls).get(name)
    return typing.get_origin(hint) is dict


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _build(cls: type, raw: dict[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        # A key that is not a plain name (a newline, a space) is shown quoted: the message stays one line.
        names = ", ".join(prefix + (k if str(k).isidentifier() else repr(k)) for k in unknown)
        raise UserError(f"{source}: unknown setting(s) {names}; valid here: {', '.join(prefix + k for k in fields)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {key} must be a table of settings, got {value!r}")
            kwargs[name] = _build(hint, value, source, prefix=key + ".")
        elif typing.get_origin(hint) is dict:
            if not isinstance(value, dict):
                raise UserError(f"{source}: {key} must be a table of settings, got {value!r}")
            kwargs[name] = dict(value)
        else:
            kwargs[name] = coerce(value, hint, key, source)
    try:
        return cls(**kwargs)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check a value against a simple type hint; accept ints for floats and strings from the CLI."""
    allowed = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if type(None) in allowed and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]: "3,4,5" or "[3, 4, 5]" from the CLI, a list from a file
        item = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v.strip() for v in value.strip().strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(coerce(v, item, key, source) for v in value)
    if isinstance(value, str) and str not in allowed:
        for kind in allowed:
            if kind in (int, float):
                try:
                    return kind(value)
                except ValueError:
                    pass
            if kind is bool and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise UserError(f"{source}: {key} must be {wanted}, got {value!r}")


def load_run_config(path: str | Path) -> RunConfig:
    """Read a recipe (.toml or .json) into a `RunConfig`; errors name the file."""
    return RunConfig.from_dict(read_config_file(path), source=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The plain data of a recipe file (.toml or .json); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".json"):
        raise UserError(f"config file {path} must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            raw = tomllib.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:  # JSON and TOML decode errors are ValueErrors
        raise UserError(f"config file {path} is malformed: {exc}") from None
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply to be a recipe") from None
    return raw
