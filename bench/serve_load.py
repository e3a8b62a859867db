"""A server started as its own process, and a load of streamed completions against it.

Shared by the server sections of `generate_vs_peers.py` and `serve_batching.py`:

    with server_process([sys.executable, "-m", "stlm", "serve", RUN, "--port", "0"], "stlm serve") as url:
        numbers = load(url, concurrency=4, prompts=["The "], n_requests=8, max_tokens=48)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def server_process(command: list[str], what: str) -> Iterator[str]:
    """Run `command` (a server that prints its http://HOST:PORT/ address first); its URL; stopped on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://(\S+?)/", line)
        if not match:
            raise RuntimeError(f"{what} did not start: {line}{proc.stdout.read() if proc.poll() else ''}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
        yield f"http://{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load(url: str, concurrency: int, prompts: list[str], n_requests: int, max_tokens: int) -> dict[str, float]:
    """`n_requests` streamed greedy completions (prompts in turn), `concurrency` at a time:
    requests/s, tokens/s and the p50 / p95 time to the first text."""
    import httpx

    model = httpx.get(f"{url}/v1/models", timeout=60).json()["data"][0]["id"]

    def one(i: int) -> tuple[float, int]:
        body = {
            "model": model,
            "prompt": prompts[i % len(prompts)],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0 = time.perf_counter()
        first, tokens = None, 0
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - t0
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return (first if first is not None else time.perf_counter() - t0), tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    ttft = sorted(d[0] for d in done)
    return {
        "requests_per_s": n_requests / wall,
        "tokens_per_s": sum(d[1] for d in done) / wall,
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p95_s": ttft[min(len(ttft) - 1, round(0.95 * (len(ttft) - 1)))],
    }
