"""CTranslate2 model folders: CTranslate2's own converter run on the hf export.

CTranslate2's `TransformersConverter` reads a transformers directory (what
`hf_t5.export_hf_t5` writes for a T5, `hf_llama.export_hf_llama` for a
decoder, tokenizer files included, so its vocabulary is stlm's) and writes
model.bin, config.json and the vocabulary. The converter imports transformers
and builds the HF model once; nothing of transformers is needed to run the
result (`ctranslate2.Translator` for T5, `ctranslate2.Generator` for decoders).

    int8      weights int8 (per-row scales), computed in int8 where the CPU can: the fast CPU type
    float32   weights and computation in fp32: greedy output equals stlm's
    float16   weights fp16 (for GPUs); int8_float16 both
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stlm.errors import UserError
from stlm.interop.hf_llama import export_hf_llama
from stlm.interop.hf_t5 import export_hf_t5
from stlm.models.decoder import DecoderLM
from stlm.models.t5 import T5Model
from stlm.tokenizers import SentencePieceTokenizer, Tokenizer

DTYPES = ("int8", "float32", "float16", "int8_float16")
ALIASES = {"float": "float32", "f32": "float32", "f16": "float16"}


def export_ct2_t5(model: T5Model, tokenizer: Tokenizer, root: Path, dtype: str = "int8") -> None:
    """Write a CTranslate2 T5 (a `Translator` model) into the empty folder `root`."""
    spiece = tokenizer.model_file if isinstance(tokenizer, SentencePieceTokenizer) else None
    with tempfile.TemporaryDirectory(prefix=".stlm-ct2-", dir=root.parent) as tmp:
        _convert(export_hf_t5(model, Path(tmp) / "hf", spiece=spiece, tokenizer=tokenizer), root, dtype)


def export_ct2_decoder(model: DecoderLM, tokenizer: Tokenizer, root: Path, dtype: str = "int8") -> None:
    """Write a CTranslate2 decoder (a `Generator` model, converted from the Llama export) into `root`."""
    with tempfile.TemporaryDirectory(prefix=".stlm-ct2-", dir=root.parent) as tmp:
        hf = Path(tmp) / "hf"
        hf.mkdir()
        export_hf_llama(model, tokenizer, hf)
        _convert(hf, root, dtype)


def _convert(hf: Path, root: Path, dtype: str) -> None:
    import ctranslate2

    quantization = ALIASES.get(dtype, dtype)
    if quantization not in DTYPES:
        raise UserError(f"--dtype {dtype} is not a CTranslate2 type: {', '.join(DTYPES)} (or float)")
    # force: `root` is the caller's fresh empty folder, which the converter recreates.
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(root), quantization=quantization, force=True)
