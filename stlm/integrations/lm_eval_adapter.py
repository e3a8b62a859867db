"""stlm checkpoints as an lm-evaluation-harness model: `--model stlm --model_args path=RUN`.

Importing this module imports `lm_eval` (the optional extra: `pip install
stlm[lm-eval]`) and registers the model under the name "stlm". The three
request kinds map onto stlm's own evaluation code, so lm-eval and
`stlm evaluate` give the same log-likelihoods:

    loglikelihood          Model.score_pairs (evaluation.scoring, batched, every family)
    loglikelihood_rolling  a document's summed NLL by Model.bits_per_byte's sliding window
                           (causal models); T5 scores the document as a target (Model.score)
    generate_until         Model.generate(stream=True), cut at the first stop string

Run lm-eval's command line with the model registered (stlm/integrations/run_lm_eval.py):

    python -m stlm.integrations.run_lm_eval --model stlm --model_args path=runs/demo \\
        --tasks my_task --include_path my_tasks/ --batch_size 32

Model arguments: path (run or checkpoint directory), device (default: auto),
rolling_context / rolling_stride (window for loglikelihood_rolling; default the
model's max_seq_len and half of it). Items per forward pass come from lm-eval's
own --batch_size ("auto" means 64).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "the lm-eval adapter needs lm-evaluation-harness: pip install 'stlm[lm-eval]' (or pip install lm-eval)"
    ) from exc

import stlm.api
from stlm.evaluation.tasks import DEFAULT_BATCH_SIZE

DEFAULT_MAX_GEN_TOKS = 256


@register_model("stlm")
class StlmLM(LM):
    """An stlm checkpoint (decoder, pooled or t5) behind lm-eval's model interface, through `stlm.api`."""

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

        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:  # lm-eval's command line asks for cuda unless told otherwise
                warnings.warn(f"device {device!r} is not available here; stlm picks one (auto)", stacklevel=2)
            device = "auto"
        self.model = stlm.api.load(path, device)
        self.batch_size = (
            int(str(batch_size)) if str(batch_size or "").isdigit() else DEFAULT_BATCH_SIZE
        )  # "auto" -> default
        self.checkpoint = self.model.path
        self.scorer = self.model.scorer(batch_size=self.batch_size)
        max_len = self.model.family.max_len(self.model.loaded.model_config)
        self.rolling_context = int(rolling_context) if rolling_context else max_len
        self.rolling_stride = int(rolling_stride) if rolling_stride else (self.rolling_context or 2) // 2

    # --- log-likelihoods ------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        scores = self.model.score_pairs([tuple(req.args) for req in requests], batch_size=self.batch_size)
        return [(score.logprob, score.greedy) for score in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return [self._document_logprob(req.args[0]) for req in requests]

    def _document_logprob(self, text: str) -> float:
        if not text:
            return 0.0
        if self.model.family.encoder_decoder:  # relative positions: the whole document is one target
            return self.model.score([text], batch_size=self.batch_size)[0]
        # Bits per byte over the document's exact UTF-8 bytes, back to summed nats.
        bpb = self.model.bits_per_byte(
            text, context=self.rolling_context, stride=self.rolling_stride, batch_size=self.batch_size
        )
        return -bpb * math.log(2) * len(text.encode("utf-8"))

    # --- generation -----------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self._generate(*req.args) for req in requests]

    def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        do_sample = bool(kwargs.pop("do_sample", False))
        text = ""
        for piece in self.model.generate(
            context,
            max_new_tokens=int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)),
            temperature=float(kwargs.pop("temperature", 1.0)) if do_sample else 0.0,
            top_k=kwargs.get("top_k"),
            top_p=kwargs.get("top_p"),
            seed=kwargs.get("seed"),
            truncate_prompt=True,
            stream=True,
        ):
            text += piece
            cut = _first_stop(text, until)
            if cut is not None:
                return text[:cut]
        return text


def _first_stop(text: str, until: list[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(stop) for stop in until if stop) if i >= 0]
    return min(found) if found else None
