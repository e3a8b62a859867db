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
    what: str  # what the folder holds, for the command's report


def _gguf(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    gguf.export_gguf(model, tokenizer, root / "model.gguf", dtype)  # type: ignore[arg-type]


def _hf_t5(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
    spiece = tokenizer.model_file if isinstance(tokenizer, SentencePieceTokenizer) else None
    export_hf_t5(model, root, spiece=spiece, tokenizer=tokenizer)  # type: ignore[arg-type]


def _only_f32(write: Callable[..., None]) -> Callable[[nn.Module, Tokenizer, Path, str], None]:
    def run(model: nn.Module, tokenizer: Tokenizer, root: Path, dtype: str) -> None:
        write(model, tokenizer, root)

    return run


GGUF = Exporter("gguf", _gguf, gguf.DTYPES, "model.gguf for llama.cpp (architecture llama)")
HF_LLAMA = Exporter(
    "hf",
    lambda m, t, root, dtype: hf_llama.export_hf_llama(m, t, root, dtype),  # type: ignore[arg-type]
    tuple(hf_llama.DTYPES),
    "a transformers LlamaForCausalLM folder with its byte tokenizer",
)
HF_T5 = Exporter("hf", _hf_t5, ("f32",), "a transformers T5ForConditionalGeneration folder with its tokenizer")
CT2 = Exporter(
    "ct2",
    lambda m, t, root, dtype: ct2.export_ct2(m, t, root, dtype),  # type: ignore[arg-type]
    ("int8", "float32", "float16", "int8_float16", "float"),
    "a CTranslate2 model folder (ctranslate2.Translator)",
)
ONNX_DECODER = Exporter(
    "onnx",
    _only_f32(onnx_export.export_onnx_decoder),
    ("f32",),
    "model.onnx with past key values, for ONNX Runtime",
)
ONNX_T5 = Exporter(
    "onnx",
    _only_f32(onnx_export.export_onnx_t5),
    ("f32",),
    "encoder.onnx, decoder.onnx, decoder_with_past.onnx, for ONNX Runtime",
)
