"""Batch-1 greedy decoding speed of stlm against its peers, side by side, at 1 and 2 threads.

Two models with random weights (seed 0), each run by every engine that can hold it:

    t5-efficient-tiny-nl32   stlm fp32, stlm int8, transformers fp32, CTranslate2 fp32 and int8
                             (its converter run on the `stlm hf-export` files)
    decoder-10m              stlm fp32, stlm int8, llama.cpp f32 (llama-cpp-python on the GGUF
                             that `stlm.interop.gguf` writes), ONNX Runtime fp32 (the model that
                             `stlm.interop.onnx_export` writes)

Every engine decodes the same prompt greedily for the same number of new tokens
(no stop at EOS). All rows of a model, at both thread counts, are called in
turn each round (timing.interleaved_many), so a burst of load from elsewhere
slows them alike; each figure is the median of the timed rounds after warm-up.
Printed: tokens/s, the ratio to the reference row (transformers for T5, stlm
fp32 for the decoder), and how many leading tokens agree with stlm fp32.

A peer whose runtime or exporter is missing is skipped with the reason. The
server section (requests/s, tokens/s, p50/p95 time to first token at
concurrency 1, 4, 16) runs when `stlm serve` exists.

    flock /work/heavy.lock .venv/bin/python bench/generate_vs_peers.py
    .venv/bin/python bench/generate_vs_peers.py --quick                  # 1 repeat, fewer tokens
    .venv/bin/python bench/generate_vs_peers.py --parts decoder --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.serve_load import load, server_process
from bench.timing import interleaved_many

ROOT = Path(__file__).resolve().parents[1]
T5_MODEL = "t5-efficient-tiny-nl32"
DECODER_MODEL = "decoder-10m"


@dataclass
class Row:
    """One engine at one thread count: `run()` decodes and returns the new token ids."""

    name: str
    threads: int
    run: Callable[[], list[int]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--parts", default="t5,decoder,server", help="comma-separated subset of t5,decoder,server")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 timed round, 24 new tokens, concurrency 1 and 4")
    parser.add_argument("--serve-quantize", default="none", help="the server's --quantize (none | int8)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.new_tokens = 1, 24
    threads = [int(t) for t in args.threads.split(",")]
    parts = set(args.parts.split(","))
    if not parts <= {"t5", "decoder", "server"}:
        parser.error(f"--parts takes a subset of t5,decoder,server, got {args.parts!r}")

    from stlm.runtime import machine_key

    print(
        f"generate_vs_peers: torch {torch.__version__}, {machine_key()}, {os.cpu_count()} CPUs; batch 1, greedy, "
        f"{args.prompt_tokens} prompt + {args.new_tokens} new tokens; median of {args.repeats} after {args.warmup} "
        f"warm-up, all rows interleaved\n"
    )
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="stlm-bench-") as tmp:
        if "t5" in parts:
            results["t5"] = measure(t5_rows(Path(tmp), threads, args), args, reference="transformers fp32")
        if "decoder" in parts:
            results["decoder"] = measure(decoder_rows(Path(tmp), threads, args), args, reference="stlm fp32")
        if "server" in parts:
            results["server"] = server_section(Path(tmp), args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


# --- timing and the table ------------------------------------------------------------------------


def measure(rows: tuple[str, list[Row], list[str]], args: argparse.Namespace, reference: str) -> dict[str, object]:
    title, table, skipped = rows
    print(title)
    for reason in skipped:
        print(f"  skipped: {reason}")
    outputs = {}
    for row in table:  # untimed: the outputs to compare, and each engine's first-call costs paid
        torch.set_num_threads(row.threads)
        outputs[(row.name, row.threads)] = row.run()

    def timed(row: Row) -> Callable[[], object]:
        def call() -> object:
            torch.set_num_threads(row.threads)
            return row.run()

        return call

    fns = {f"{row.name} @{row.threads}": timed(row) for row in table}
    seconds = interleaved_many(fns, warmup=args.warmup, repeats=args.repeats, device=torch.device("cpu"))
    out: dict[str, object] = {}
    print(f"  {'engine':<26}{'threads':>8}{'tokens/s':>10}{'x ' + reference:>28}{'agrees':>10}")
    for row in table:
        key = f"{row.name} @{row.threads}"
        tokens = outputs[(row.name, row.threads)]
        speed = len(tokens) / seconds[key]
        ref_key = f"{reference} @{row.threads}"
        ratio = seconds[ref_key] / seconds[key] if ref_key in seconds else float("nan")
        base = outputs.get(("stlm fp32", row.threads), [])
        agree = _common_prefix(tokens, base)
        print(f"  {row.name:<26}{row.threads:>8}{speed:>10.1f}{ratio:>27.2f}x{agree:>6}/{len(base)}")
        out[key] = {"tokens_per_s": speed, "ratio_to_reference": ratio, "agrees_with_stlm_fp32": agree}
    print()
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _missing(module: str) -> str | None:
    """Why `module` cannot be imported (None when it can): a peer runtime or an stlm exporter not here."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{module} is not installed / not in this checkout"


# --- T5 ------------------------------------------------------------------------------------------


def t5_rows(tmp: Path, threads: list[int], args: argparse.Namespace) -> tuple[str, list[Row], list[str]]:
    from stlm import registry
    from stlm.generation.seq2seq import stream_seq2seq
    from stlm.interop.hf_t5 import export_hf_t5

    family, cfg = registry.resolve_model(T5_MODEL)
    torch.manual_seed(0)
    fp32 = family.build(cfg).eval()
    hf_dir = export_hf_t5(fp32, tmp / "t5-hf")
    torch.manual_seed(0)
    int8 = family.quantize(family.build(cfg).eval(), "int8")  # the same weights as fp32 (seed 0), then int8
    g = torch.Generator().manual_seed(1)
    source = [*torch.randint(3, cfg.vocab_size - 200, (args.prompt_tokens - 1,), generator=g).tolist(), cfg.eos_id]
    n = args.new_tokens

    def stlm_run(model: torch.nn.Module) -> Callable[[], list[int]]:
        return lambda: list(stream_seq2seq(model, source, max_new_tokens=n, eos_id=-1))

    rows: list[Row] = []
    skipped: list[str] = []
    for t in threads:
        rows += [Row("stlm fp32", t, stlm_run(fp32)), Row("stlm int8", t, stlm_run(int8))]
    reason = _missing("transformers")
    if reason is None:
        import transformers

        hf = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
        hf.config.use_cache = True
        source_t = torch.tensor([source])

        def hf_run() -> list[int]:
            with torch.inference_mode():
                out = hf.generate(
                    source_t, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1, eos_token_id=None
                )
            return out[0, 1:].tolist()  # after the decoder start token

        rows += [Row("transformers fp32", t, hf_run) for t in threads]
    else:
        skipped.append(f"transformers: {reason}")
    reason = _missing("ctranslate2")
    if reason is None:
        for compute in ("float32", "int8"):
            ct2_dir = convert_ct2(hf_dir, tmp / f"t5-ct2-{compute}", compute, cfg.vocab_size)
            rows += [Row(f"ctranslate2 {compute}", t, ct2_runner(ct2_dir, compute, t, source, n)) for t in threads]
    else:
        skipped.append(f"CTranslate2: {reason}")
    n_params = sum(p.numel() for p in fp32.parameters())
    return f"{T5_MODEL} ({n_params:,} parameters), random weights", rows, skipped


def _stub_tokenizer(vocab_size: int):
    """What CTranslate2's T5 converter reads from a tokenizer, for a model with no vocabulary file:
    token i is named "t<i>" (0, 1, 2 are T5's pad, EOS and unk)."""
    names = ["<pad>", "</s>", "<unk>", *(f"t{i}" for i in range(3, vocab_size))]

    class Stub:
        pad_token, eos_token, unk_token = "<pad>", "</s>", "<unk>"

        def get_vocab(self) -> dict[str, int]:
            return {name: i for i, name in enumerate(names)}

        def convert_ids_to_tokens(self, i: int) -> str:
            return names[i]

    return Stub()


def convert_ct2(hf_dir: Path, out: Path, compute: str, vocab_size: int) -> Path:
    """CTranslate2's own converter on the hf-export folder (random weights carry no tokenizer files)."""
    import ctranslate2

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):  # type: ignore[no-untyped-def]
            return _stub_tokenizer(vocab_size)

    Converter(str(hf_dir)).convert(str(out), quantization=compute, force=True)
    return out


def ct2_runner(path: Path, compute: str, threads: int, source: list[int], n: int) -> Callable[[], list[int]]:
    import ctranslate2

    translator = ctranslate2.Translator(
        str(path), device="cpu", compute_type=compute, intra_threads=threads, inter_threads=1
    )
    names = ["<pad>", "</s>", "<unk>"]
    tokens = [names[i] if i < 3 else f"t{i}" for i in source]

    def to_id(name: str) -> int:
        return names.index(name) if name in names else int(name[1:])

    def run() -> list[int]:
        out = translator.translate_batch(
            [tokens], beam_size=1, max_decoding_length=n, min_decoding_length=n, return_end_token=True
        )
        return [to_id(name) for name in out[0].hypotheses[0]]

    return run


# --- decoder -------------------------------------------------------------------------------------


def decoder_rows(tmp: Path, threads: list[int], args: argparse.Namespace) -> tuple[str, list[Row], list[str]]:
    from stlm import registry
    from stlm.generation.decoder import generate
    from stlm.tokenizers import ByteTokenizer

    family, cfg = registry.resolve_model(DECODER_MODEL)
    torch.manual_seed(0)
    fp32 = family.build(cfg).eval()
    torch.manual_seed(0)
    int8 = family.quantize(family.build(cfg).eval(), "int8")
    g = torch.Generator().manual_seed(1)
    tokenizer = ByteTokenizer()
    prompt = [tokenizer.bos_id, *torch.randint(32, 127, (args.prompt_tokens - 1,), generator=g).tolist()]  # ASCII
    n = args.new_tokens

    def stlm_run(model: torch.nn.Module) -> Callable[[], list[int]]:
        return lambda: list(generate(model, prompt, max_new_tokens=n, temperature=0, stop_ids=()))

    rows: list[Row] = []
    skipped: list[str] = []
    for t in threads:
        rows += [Row("stlm fp32", t, stlm_run(fp32)), Row("stlm int8", t, stlm_run(int8))]
    reason = _missing("llama_cpp") or _missing("stlm.interop.gguf")
    if reason is None:
        from stlm.interop.gguf import export_gguf  # another helper's exporter (issue 13, item 3)

        path = tmp / "decoder.gguf"
        export_gguf(fp32, tokenizer, path, "f32")
        rows += [Row("llama.cpp f32", t, llama_runner(path, t, prompt, n)) for t in threads]
    else:
        skipped.append(f"llama.cpp: {reason}")
    reason = _missing("onnxruntime") or _missing("stlm.interop.onnx_export")
    if reason is None:
        from stlm.interop.onnx_export import export_onnx_decoder

        root = tmp / "decoder-onnx"
        root.mkdir()
        export_onnx_decoder(fp32, tokenizer, root)
        rows += [Row("onnxruntime fp32", t, onnx_runner(root, t, prompt, n)) for t in threads]
    else:
        skipped.append(f"ONNX Runtime: {reason}")
    n_params = sum(p.numel() for p in fp32.parameters())
    return f"{DECODER_MODEL} ({n_params:,} parameters), random weights", rows, skipped


def llama_runner(path: Path, threads: int, prompt: list[int], n: int) -> Callable[[], list[int]]:
    import llama_cpp

    llm = llama_cpp.Llama(
        str(path), n_ctx=len(prompt) + n + 8, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False
    )
    # stlm's byte ids are llama.cpp's ids (the GGUF keeps the vocabulary order); top_k=1 is greedy.

    def run() -> list[int]:
        out = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return out

    return run


def onnx_runner(root: Path, threads: int, prompt: list[int], n: int) -> Callable[[], list[int]]:
    """Greedy decoding with past key values on the exported `model.onnx` (inputs and outputs in the
    order the exporter names them: input_ids then past.*, logits then present.*)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(root / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    past_inputs = [i for i in inputs if i.name != "input_ids"]
    meta = json.loads((root / "onnx_meta.json").read_text(encoding="utf-8"))
    n_heads, d_head = meta["n_heads"], meta["d_head"]

    def run() -> list[int]:
        past = {i.name: np.zeros((1, n_heads, 0, d_head), dtype=np.float32) for i in past_inputs}
        ids = np.array([prompt], dtype=np.int64)
        out = []
        for _ in range(n):
            logits, *presents = session.run(None, {"input_ids": ids, **past})
            token = int(logits[0, -1].argmax())
            out.append(token)
            past = dict(zip(past, presents))
            ids = np.array([[token]], dtype=np.int64)
        return out

    return run


# --- the server ----------------------------------------------------------------------------------

CONCURRENCY = (1, 4, 16)


def server_section(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    print(f"stlm serve ({DECODER_MODEL}, random weights, byte tokenizer, --quantize {args.serve_quantize})")
    reason = _missing("stlm.serve") or _missing("httpx")
    if reason is not None:
        print(f"  skipped: {reason}\n")
        return {"skipped": reason}
    from stlm import checkpoint as ckpt_io
    from stlm import registry

    family, cfg = registry.resolve_model(DECODER_MODEL)
    torch.manual_seed(0)
    run_dir = tmp / "serve-run"
    record = ckpt_io.RunRecord(family, cfg, {"name": "byte"}, {"run": {"model": DECODER_MODEL}})
    ckpt_io.save_checkpoint(run_dir, 0, model=family.build(cfg), optimizer=None, config=record, state={}, keep=1)
    levels = CONCURRENCY[:2] if args.quick else CONCURRENCY
    n = args.new_tokens
    results: dict[str, object] = {}
    threads = max(int(t) for t in args.threads.split(","))
    with _server(run_dir, threads, args.serve_quantize) as url:
        load(url, 1, ["The "], 1, n)  # warm-up: the first request pays the server's lazy start-up
        print(
            f"  {'concurrency':>11}{'requests':>10}{'requests/s':>12}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}"
        )
        for level in levels:
            n_requests = max(8, 2 * level) if not args.quick else level
            rows = load(url, level, ["The "], n_requests, n)
            print(
                f"  {level:>11}{n_requests:>10}{rows['requests_per_s']:>12.2f}{rows['tokens_per_s']:>10.1f}"
                f"{rows['ttft_p50_s'] * 1000:>8.0f}ms{rows['ttft_p95_s'] * 1000:>8.0f}ms"
            )
            results[str(level)] = rows
    print()
    return results


def _server(run_dir: Path, threads: int, quantize: str):
    """`stlm serve RUN` on a free loopback port, as a user starts it; stopped on exit."""
    command = [sys.executable, "-m", "stlm", "serve", str(run_dir), "--port", "0", "--threads", str(threads)]
    command += ["--log-level", "warning"] + (["--quantize", quantize] if quantize != "none" else [])
    return server_process(command, "stlm serve")


if __name__ == "__main__":
    main()
