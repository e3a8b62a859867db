"""stlm checkpoints as an lm-evaluation-harness model: `--model stlm --model_args path=RUN`.

Importing this module imports `lm_eval` (the optional extra: `pip install
stlm[lm-eval]`) and registers the model under the name "stlm". The three
request kinds map onto stlm's own evaluation code, so lm-eval and
`stlm evaluate` give the same log-likelihoods:

    loglikelihood          evaluation.scoring.score_continuations (batched, every family)
    loglikelihood_rolling  a document's summed NLL by bpb.bits_per_byte's sliding window
                           (causal byte models); T5 scores the document as a target
    generate_until         generation.stream, cut at the first stop string

Run lm-eval's command line with the model registered (stlm/integrations/run_lm_eval.py):

    python -m stlm.integrations.run_lm_eval --model stlm --model_args path=runs/demo \\
        --tasks my_task --include_path my_tasks/ --batch_size 32

Model arguments: path (run or checkpoint directory), device (default: auto),
rolling_context / rolling_stride (window for loglikelihood_rolling; default the
model's max_seq_len and half of it). Items per forward pass come from lm-eval's
own --batch_size ("auto" means 64).
"""

from __future__ import annotations

import codecs
import warnings
from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "the lm-eval adapter needs lm-evaluation-harness: pip install 'stlm[lm-eval]' (or pip install lm-eval)"
    ) from exc

from stlm.evaluation.tasks import DEFAULT_BATCH_SIZE, EvalModel

DEFAULT_MAX_GEN_TOKS = 256


@register_model("stlm")
class StlmLM(LM):
    """An stlm checkpoint (decoder, pooled or t5) behind lm-eval's model interface."""

    def __init__(
        self,
        path: str,
        device: str | None = None,
        batch_size: int | str | None = None,
        rolling_context: int | None = None,
        rolling_stride: int | None = None,
        **_ignored: Any,  # lm-eval passes max_batch_size and others every model may ignore
    ) -> None:
        super().__init__()
        import torch

        from stlm.config import RuntimeConfig
        from stlm.checkpoint import load
        from stlm.runtime import resolve_runtime

        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:  # lm-eval's command line asks for cuda unless told otherwise
                warnings.warn(f"device {device!r} is not available here; stlm picks one (auto)", stacklevel=2)
            device = "auto"
        runtime = resolve_runtime(RuntimeConfig(device=device))
        loaded = load(path, runtime.device)
        model = loaded.model
        size = int(batch_size) if str(batch_size or "").isdigit() else DEFAULT_BATCH_SIZE  # "auto" -> default
        self.checkpoint = loaded.path
        self.scorer = EvalModel(
            model, loaded.tokenizer, loaded.family, loaded.record.to_dict(),
            device=runtime.device, autocast=runtime.autocast, batch_size=size,
        )
        max_len = getattr(model.config, "max_seq_len", None)
        self.rolling_context = int(rolling_context) if rolling_context else max_len
        self.rolling_stride = int(rolling_stride) if rolling_stride else (self.rolling_context or 2) // 2

    # --- log-likelihoods ------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(req.args) for req in requests]
        todo = [i for i, (_, cont) in enumerate(pairs) if cont]  # an empty continuation has log-probability 0
        results: list[tuple[float, bool]] = [(0.0, True)] * len(pairs)
        for i, score in zip(todo, self.scorer.score([pairs[i] for i in todo])):
            results[i] = (score.logprob, score.greedy)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return [self._document_logprob(req.args[0]) for req in requests]

    def _document_logprob(self, text: str) -> float:
        if not text:
            return 0.0
        s = self.scorer
        if s.family.encoder_decoder:  # relative positions: the whole document is one target
            return s.score([("", text)])[0].logprob
        if getattr(s.tokenizer, "name", None) != "byte":
            raise NotImplementedError(
                f"loglikelihood_rolling supports byte-level causal models and t5, not {s.family.name} with {s.tokenizer.name}"
            )
        from stlm.evaluation.bpb import bits_per_byte

        ids = s.tokenizer.encode(text, bos=True)
        result = bits_per_byte(
            s.model, ids, context=self.rolling_context, stride=self.rolling_stride,
            batch_size=s.batch_size, device=s.device, autocast=s.autocast() if s.autocast else None,
        )
        return -result.nats

    # --- generation -----------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self._generate(*req.args) for req in requests]

    def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        s = self.scorer
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0)) if do_sample else 0.0
        prompt = s.family.prompt_ids(s.tokenizer, context)
        max_len = s.family.max_len(s.model.config)
        if max_len is not None:
            prompt = prompt[-max(1, max_len - min(max_new, max_len // 2)) :]  # keep room to write
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        for token in s.family.stream(
            s.model, prompt, eos_id=s.tokenizer.eos_id, max_new_tokens=max_new,
            temperature=temperature, top_k=kwargs.get("top_k"), top_p=kwargs.get("top_p"), seed=kwargs.get("seed"),
        ):
            text += decoder.decode(s.tokenizer.decode_bytes([token]))
            cut = _first_stop(text, until)
            if cut is not None:
                return text[:cut]
        text += decoder.decode(b"", final=True)
        cut = _first_stop(text, until)
        return text if cut is None else text[:cut]


def _first_stop(text: str, until: list[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(stop) for stop in until if stop) if i >= 0]
    return min(found) if found else None
