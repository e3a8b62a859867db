"""The export formats as data: what each writes, in which number types; family rows pick theirs.

A family row lists the exporters its models fit (`ModelFamily.exports`);
`stlm.api.export` loads a run, looks the format up on its family's row, lets
the writer fill a fresh temporary folder and renames that folder into place.
Heavy libraries (gguf, onnx, ctranslate2) are imported by the writers only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from stlm.interop import ct2, gguf, hf_llama, onnx_export
from stlm.interop.hf_t5 import export_hf_t5
from stlm.tokenizers import SentencePieceTokenizer, Tokenizer

FORMATS = ("gguf", "hf", "ct2", "onnx")


@dataclass(frozen=True)
class Exporter:
    """One format for one family: `write(model, tokenizer, folder, dtype)` fills an empty folder."""

    format: str
    write: Callable[[nn.Module, Tokenizer, Path, str], None]
    dtypes: tuple[str, ...]  # the --dtype values it takes, the default first


# Writers in the one signature the table needs; each module's own function says what it writes.


def _gguf(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    gguf.export_gguf(model, tokenizer, root / "model.gguf", dtype)  # type: ignore[arg-type]


def _hf_llama(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    hf_llama.export_hf_llama(model, tokenizer, root, dtype)  # type: ignore[arg-type]


def _hf_t5(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    spiece = tokenizer.model_file if isinstance(tokenizer, SentencePieceTokenizer) else None
    export_hf_t5(model, root, spiece=spiece, tokenizer=tokenizer)  # type: ignore[arg-type]


def _ct2_t5(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    ct2.export_ct2_t5(model, tokenizer, root, dtype)  # type: ignore[arg-type]


def _ct2_decoder(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    ct2.export_ct2_decoder(model, tokenizer, root, dtype)  # type: ignore[arg-type]


def _onnx_decoder(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    onnx_export.export_onnx_decoder(model, tokenizer, root)  # type: ignore[arg-type]  # fp32 only


def _onnx_t5(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    onnx_export.export_onnx_t5(model, tokenizer, root)  # type: ignore[arg-type]  # fp32 only


GGUF = Exporter("gguf", _gguf, gguf.DTYPES)
HF_LLAMA = Exporter("hf", _hf_llama, tuple(hf_llama.DTYPES))
HF_T5 = Exporter("hf", _hf_t5, ("f32",))
CT2_T5 = Exporter("ct2", _ct2_t5, (*ct2.DTYPES, *ct2.ALIASES))
CT2_DECODER = Exporter("ct2", _ct2_decoder, (*ct2.DTYPES, *ct2.ALIASES))
ONNX_DECODER = Exporter("onnx", _onnx_decoder, ("f32",))
ONNX_T5 = Exporter("onnx", _onnx_t5, ("f32",))
