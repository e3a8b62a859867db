"""Training throughput of a pooled byte model against the same stack unpooled.

Both models have the same parameters (the unpooled one patches every byte);
both train on the same real windows of the pydocs corpus with fused AdamW.
Steps alternate between the two models so machine noise hits both alike;
each figure is the median of timed steps after warm-up. Printed: seconds per
step, training bytes/s, the ratio pooled / unpooled, and the mean bytes per
patch the pooled model formed on those windows.

    .venv/bin/python bench/pooled_throughput.py                       # pooled-10m vs pooled-10m-unpooled
    .venv/bin/python bench/pooled_throughput.py --pooled pooled-tiny --unpooled pooled-tiny --set-unpooled fixed:1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pooled", default="pooled-10m")
    parser.add_argument("--unpooled", default="pooled-10m-unpooled")
    parser.add_argument("--set-unpooled", metavar="RULE", help="override the baseline's boundary rule, e.g. fixed:1")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from stlm import registry
    from stlm.data import WindowLoader, prepare_data
    from stlm.models.byte_decoder.boundaries import mean_patch_length
    from stlm.objectives.next_token import model_loss
    from stlm.tokenizers import ByteTokenizer

    data = prepare_data("pydocs", ByteTokenizer(), cache_dir=None, progress=False)
    loader = WindowLoader(data.train, args.seq_len, args.batch, seed=0)
    windows = [loader.next_batch() for _ in range(args.warmup + args.repeats)]  # (B, T+1) each

    models = {}
    for role, name in (("pooled", args.pooled), ("unpooled", args.unpooled)):
        family, cfg = registry.get_config(name)
        if role == "unpooled" and args.set_unpooled:
            cfg = dataclasses.replace(cfg, boundary=args.set_unpooled)
        torch.manual_seed(0)
        model = registry.build_model(family, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        models[role] = (name, cfg, model, opt)

    times: dict[str, list[float]] = {"pooled": [], "unpooled": []}
    for i, window in enumerate(windows):
        for role in ("pooled", "unpooled"):
            _, _, model, opt = models[role]
            t0 = time.perf_counter()
            loss = model_loss(model, window)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= args.warmup:
                times[role].append(time.perf_counter() - t0)

    n_bytes = int((windows[0][:, 1:] < 256).sum())
    sample = torch.cat(windows)[:, :-1]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch {args.batch} x {args.seq_len} bytes "
        f"of pydocs; median of {args.repeats} interleaved steps after {args.warmup} warm-up"
    )
    rates = {}
    for role in ("pooled", "unpooled"):
        name, cfg, model, _ = models[role]
        step = statistics.median(times[role])
        rates[role] = n_bytes / step
        patch = mean_patch_length(model, sample)
        print(
            f"  {name:24s} {model.num_params():>12,} params  boundary {cfg.boundary:8s} "
            f"{patch:5.2f} ids/patch  {step:6.2f} s/step  {rates[role]:9,.0f} bytes/s"
        )
    print(f"pooled / unpooled training throughput: {rates['pooled'] / rates['unpooled']:.2f}x")


if __name__ == "__main__":
    main()
