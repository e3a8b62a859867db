"""A T5 model as a CTranslate2 model folder: CTranslate2's own converter run on the hf export.

CTranslate2's `TransformersConverter` reads a transformers T5 directory (what
`hf_t5.export_hf_t5` writes, tokenizer files included, so its vocabulary is
stlm's) and writes model.bin, config.json and shared_vocabulary.json. The
converter imports transformers and builds the HF model once; nothing else of
transformers is needed to run the result.

    int8      weights int8 (per-row scales), computed in int8 where the CPU can: the fast CPU type
    float32   weights and computation in fp32: greedy output equals stlm's
    float16   weights fp16 (for GPUs)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stlm.errors import UserError
from stlm.interop.hf_t5 import export_hf_t5
from stlm.models.t5 import T5Model
from stlm.tokenizers import SentencePieceTokenizer, Tokenizer

DTYPES = ("int8", "float32", "float16", "int8_float16")
ALIASES = {"float": "float32", "f32": "float32", "f16": "float16"}


def export_ct2(model: T5Model, tokenizer: Tokenizer, root: Path, dtype: str = "int8") -> None:
    """Write a CTranslate2 model into the empty folder `root` (the converter recreates it)."""
    import ctranslate2

    quantization = ALIASES.get(dtype, dtype)
    if quantization not in DTYPES:
        raise UserError(f"--dtype {dtype} is not a CTranslate2 type: {', '.join(DTYPES)} (or float)")
    spiece = tokenizer.model_file if isinstance(tokenizer, SentencePieceTokenizer) else None
    with tempfile.TemporaryDirectory(prefix=".stlm-ct2-", dir=root.parent) as tmp:
        hf = export_hf_t5(model, Path(tmp) / "hf", spiece=spiece, tokenizer=tokenizer)
        ctranslate2.converters.TransformersConverter(str(hf)).convert(str(root), quantization=quantization, force=True)
