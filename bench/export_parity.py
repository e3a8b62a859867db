"""How close each `stlm export` format runs to stlm itself, on one mixed text.

For a decoder run: GGUF (f32, f16, q8_0) in llama.cpp through llama-cpp-python
(where installed), transformers' LlamaForCausalLM, ONNX Runtime. For a T5 run:
ONNX Runtime and CTranslate2 (float32, int8). Printed per format: whether the
runtime's token ids equal stlm's, the share of positions whose top-1 id agrees,
max |logit difference|, whether greedy output is identical, and the file size.
Without --decoder / --t5, random decoder-tiny and t5-debug runs are made, as
the tests make them (weights spread wider than at initialisation, so greedy
output varies); a trained run's margins are wider, so its top-1 agreement is
the more telling number.

    .venv/bin/python bench/export_parity.py
    .venv/bin/python bench/export_parity.py --decoder runs/tiny --t5 runs/t5-run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from stlm import api

TEXT = "Line one\n\tTabbed: café, naïve, Ελληνικά; 中文字符 and emoji 🐍🚀 <s> end. " * 2
N_NEW = 40


def size(path: Path) -> str:
    total = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    return f"{total / 1e6:.2f} MB"


def row(fmt: str, ids_equal: object, top1: float, diff: float, greedy: object, where: Path) -> None:
    """One table row; NaN (not measured for this format) prints as "-"."""
    share = "-" if np.isnan(top1) else f"{top1:.1%}"
    gap = "-" if np.isnan(diff) else f"{diff:.2e}"
    print(f"| {fmt} | {ids_equal} | {share} | {gap} | {greedy} | {size(where)} |")


def decoder(run: Path, out: Path) -> None:
    model = api.load(run, device="cpu")
    ids = model.family.prompt_ids(model.tokenizer, TEXT)
    with torch.no_grad():
        ref = model.module(torch.tensor([ids]))[0].numpy()
    prompt = ids[:16]
    greedy = model.family.generate_greedy(model.module, [prompt], eos_id=model.tokenizer.eos_id, max_new_tokens=N_NEW)[
        0
    ]
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("| gguf | llama-cpp-python not installed | | | | |")
    for dtype in ("f32", "f16", "q8_0"):
        path = api.export(run, out / f"gguf-{dtype}", "gguf", dtype) / "model.gguf"
        if llama_cpp is None:
            continue
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=1, verbose=False)
        theirs = llm.tokenize(TEXT.encode("utf-8"), add_bos=True, special=False)
        llm.eval(theirs)
        logits = np.array(llm.scores[: len(theirs)])  # a copy: generate() below reuses the buffer
        llm.reset()
        out_ids = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            if token == model.tokenizer.eos_id or len(out_ids) == len(greedy):
                break
            out_ids.append(token)
        row(
            f"gguf {dtype} (llama.cpp)",
            theirs == ids,
            (logits.argmax(-1) == ref.argmax(-1)).mean(),
            float(np.abs(logits - ref).max()),
            out_ids == greedy,
            path,
        )
        llm.close()
    try:
        import transformers

        hf_dir = api.export(run, out / "hf", "hf")
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
        tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0].numpy()
            new = hf.generate(
                torch.tensor([prompt]), max_new_tokens=N_NEW, do_sample=False, eos_token_id=model.tokenizer.eos_id
            )[0, len(prompt) :].tolist()
        row(
            "hf (transformers Llama)",
            tok(TEXT).input_ids == ids,
            (logits.argmax(-1) == ref.argmax(-1)).mean(),
            float(np.abs(logits - ref).max()),
            new[: len(greedy)] == greedy,
            hf_dir,
        )
    except ImportError:
        print("| hf | transformers not installed | | | | |")
    from stlm.interop.onnx_export import _layer_names, _session, greedy_decoder

    onnx_dir = api.export(run, out / "onnx", "onnx")
    cfg = model.module.config
    empty = np.zeros((1, cfg.n_heads, 0, cfg.d_head), np.float32)
    logits = _session(onnx_dir / "model.onnx").run(
        None, {"input_ids": np.array([ids]), **dict.fromkeys(_layer_names("past", cfg.n_layers), empty)}
    )[0][0]
    row(
        "onnx (ONNX Runtime)",
        "(stlm's ids)",
        (logits.argmax(-1) == ref.argmax(-1)).mean(),
        float(np.abs(logits - ref).max()),
        greedy_decoder(onnx_dir, prompt, N_NEW) == greedy,
        onnx_dir,
    )
    try:
        import ctranslate2
        import transformers
    except ImportError:
        print("| ct2 | ctranslate2 or transformers not installed | | | | |")
        return
    tok = transformers.AutoTokenizer.from_pretrained(out / "hf")
    for dtype in ("float32", "int8"):
        ct2_dir = api.export(run, out / f"ct2-{dtype}", "ct2", dtype)
        generator = ctranslate2.Generator(str(ct2_dir), device="cpu", compute_type=dtype)
        result = generator.generate_batch(
            [tok.convert_ids_to_tokens(prompt)], max_length=N_NEW, sampling_topk=1, include_prompt_in_result=False
        )[0]
        new = tok.convert_tokens_to_ids(result.sequences[0])
        row(f"ct2 {dtype} (CTranslate2)", "(stlm's ids)", float("nan"), float("nan"), new == greedy, ct2_dir)


def t5(run: Path, out: Path) -> None:
    model = api.load(run, device="cpu")
    source = model.family.prompt_ids(model.tokenizer, TEXT)
    greedy = model.family.generate_greedy(model.module, [source], eos_id=model.tokenizer.eos_id, max_new_tokens=N_NEW)[
        0
    ]
    from stlm.interop.onnx_export import greedy_t5

    onnx_dir = api.export(run, out / "t5-onnx", "onnx")
    row(
        "t5 onnx (ONNX Runtime)",
        "(stlm's ids)",
        float("nan"),
        float("nan"),
        greedy_t5(onnx_dir, source, N_NEW) == greedy,
        onnx_dir,
    )
    import ctranslate2
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(api.export(run, out / "t5-hf", "hf"))
    for dtype in ("float32", "int8"):
        ct2_dir = api.export(run, out / f"t5-ct2-{dtype}", "ct2", dtype)
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=dtype)
        hyp = translator.translate_batch([tok.convert_ids_to_tokens(source)], beam_size=1, max_decoding_length=N_NEW)[
            0
        ].hypotheses[0]
        ids = tok.convert_tokens_to_ids(hyp)
        row(
            f"t5 ct2 {dtype} (CTranslate2)",
            tok(TEXT).input_ids == source,
            float("nan"),
            float("nan"),
            ids == greedy,
            ct2_dir,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", type=Path, help="a decoder run (default: a random decoder-tiny)")
    parser.add_argument("--t5", type=Path, help="a byte T5 run (default: a random t5-debug)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.decoder is None or args.t5 is None:
            from tests.interop.export_runs import decoder_run, t5_run

            args.decoder = args.decoder or decoder_run(root / "runs")
            args.t5 = args.t5 or t5_run(root / "runs")
        print("| format | ids equal | top-1 agrees | max abs diff | greedy equal | size |\n|---|---|---|---|---|---|")
        decoder(args.decoder, root / "decoder")
        t5(args.t5, root / "t5")


if __name__ == "__main__":
    main()
