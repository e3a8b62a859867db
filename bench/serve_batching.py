"""`stlm serve` throughput: the batched engine (one forward per round) against per-row stepping.

Two servers of the same run (decoder-10m shape, random weights, seed 0, byte
tokenizer) run side by side as separate processes on free loopback ports:

    batched       the engine as `stlm serve` runs it: one forward per round over
                  every active row (continuous batching, `stlm.generation.rows`)
    interleaved   the same engine forced to advance each row by its family's own
                  loop, one forward per row per round (the engine before batching)

At each concurrency (1, 4, 16) both servers take the same load in turn, twice
(interleaved, batched, batched, interleaved), so a burst of load from elsewhere
hits both alike; each figure is the mean of its two passes. A load is
`requests` streamed greedy completions of `--new-tokens` ids, `concurrency` at
a time, prompts of different lengths. Printed per engine: requests/s, tokens/s
(completion ids / wall time), and p50 / p95 time to the first streamed text.

    flock /work/heavy.lock .venv/bin/python bench/serve_batching.py
    .venv/bin/python bench/serve_batching.py --quick          # concurrency 1 and 4, fewer requests
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_load import load, server_process  # noqa: E402

MODEL = "decoder-10m"
ENGINES = ("interleaved", "batched")
CONCURRENCY = (1, 4, 16)
PROMPTS = (  # different lengths, so batched rows sit at different positions
    "The ",
    "def main():\n    ",
    "A class is a blueprint for objects; each instance keeps its own ",
    "import os\nimport sys\n\n",
    "In Python, a list comprehension builds a list from an iterable in one expression, for example ",
    "Numbers: 1, 2, 3, ",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=16, help="the servers' --max-batch")
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 4, one pass each")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a server process: its run folder
    parser.add_argument("--engine", choices=ENGINES, default="batched", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args)

    import torch

    from stlm import checkpoint as ckpt_io
    from stlm import registry
    from stlm.runtime import machine_key

    print(
        f"serve_batching: torch {torch.__version__}, {machine_key()}, {os.cpu_count()} CPUs; {MODEL} (random weights), "
        f"{args.threads} threads per server, --max-batch {args.max_batch}, greedy, {args.new_tokens} new tokens, "
        "streamed\n"
    )
    levels = CONCURRENCY[:2] if args.quick else CONCURRENCY
    order = ENGINES if args.quick else (*ENGINES, *reversed(ENGINES))
    results: dict[str, dict[str, list[dict[str, float]]]] = {e: {} for e in ENGINES}
    with tempfile.TemporaryDirectory(prefix="stlm-serve-bench-") as tmp:
        family, cfg = registry.resolve_model(MODEL)
        torch.manual_seed(0)
        run_dir = Path(tmp) / "run"
        record = ckpt_io.RunRecord(family, cfg, {"name": "byte"}, {"run": {"model": MODEL}})
        ckpt_io.save_checkpoint(run_dir, 0, model=family.build(cfg), optimizer=None, config=record, state={}, keep=1)
        with contextlib.ExitStack() as stack:
            urls = {e: stack.enter_context(_server(run_dir, e, args)) for e in ENGINES}
            for engine in ENGINES:
                load(urls[engine], 1, PROMPTS, 1, args.new_tokens)  # warm-up: lazy start-up, first allocations
            for level in levels:
                n_requests = max(8, 2 * level) if not args.quick else max(4, level)
                for engine in order:
                    results[engine].setdefault(str(level), []).append(
                        load(urls[engine], level, PROMPTS, n_requests, args.new_tokens)
                    )
    summary = _table(results, levels)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def child(args: argparse.Namespace) -> None:
    """One server: the run behind `stlm serve`'s app, its engine batched or per-row."""
    import uvicorn

    import stlm
    from stlm.serve import Limits, ServeSettings, build_app, listen

    model = stlm.load(args.child, device="cpu", threads=args.threads)
    settings = ServeSettings(
        "bench", Limits(max_prompt_tokens=1024, max_tokens_limit=1024), max_batch=args.max_batch, queue_size=256
    )
    app = build_app(model, settings)
    if args.engine == "interleaved":
        app.state.engine.batch = None  # every row by its family's own loop: one forward per row per round
    sock = listen("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    print(f"serving on http://{host}:{port}/", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)).run(sockets=[sock])


def _server(run_dir: Path, engine: str, args: argparse.Namespace):
    command = [sys.executable, __file__, "--child", str(run_dir), "--engine", engine, "--threads", str(args.threads)]
    return server_process(command + ["--max-batch", str(args.max_batch)], f"the {engine} server")


def _table(results: dict[str, dict[str, list[dict[str, float]]]], levels: tuple[int, ...]) -> dict[str, object]:
    summary: dict[str, object] = {}
    print(f"  {'concurrency':>11}  {'engine':<12}{'requests/s':>11}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}")
    for level in levels:
        for engine in ENGINES:
            passes = results[engine][str(level)]
            mean = {k: statistics.fmean(p[k] for p in passes) for k in passes[0]}
            summary.setdefault(str(level), {})[engine] = mean  # type: ignore[union-attr]
            print(
                f"  {level:>11}  {engine:<12}{mean['requests_per_s']:>11.2f}{mean['tokens_per_s']:>10.1f}"
                f"{mean['ttft_p50_s'] * 1000:>8.0f}ms{mean['ttft_p95_s'] * 1000:>8.0f}ms"
            )
        both = summary[str(level)]  # type: ignore[index]
        ratio = both["batched"]["tokens_per_s"] / both["interleaved"]["tokens_per_s"]
        print(f"  {level:>11}  batched / interleaved tokens/s: {ratio:.2f}x")
    return summary


if __name__ == "__main__":
    main()
