"""stlm's T5 against Hugging Face transformers' T5ForConditionalGeneration, side by side.

Both models get the same config and the same weights (ours exported to Hugging
Face format, then loaded by transformers), so outputs can be checked to agree
before anything is timed. Measurements alternate between the two models
(ours, theirs, ours, ...) so machine noise hits both alike; each figure is the
median of timed repetitions after warm-up. Printed: tokens/s for a training
step (forward, backward, AdamW step; in + out tokens), tokens/s for an eval
forward, and ms per new token for batch-1 greedy generation with a KV cache,
each with the ratio ours / theirs.

    .venv/bin/python bench/t5_vs_hf.py                       # t5-efficient-tiny-nl32, fp32, 2 threads
    .venv/bin/python bench/t5_vs_hf.py --quick               # fewer repetitions, smaller shapes only
    .venv/bin/python bench/t5_vs_hf.py --parts gen --repeats 9   # only greedy generation
    .venv/bin/python bench/t5_vs_hf.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timing
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="t5-efficient-tiny-nl32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 repeat, skip the 8 x 512 training step")
    parser.add_argument(
        "--parts", default="train,eval,gen", help="comma-separated subset of train,eval,gen to measure (default: all)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"train", "eval", "gen"}:
        parser.error(f"--parts takes a comma-separated subset of train,eval,gen, got {args.parts!r}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import transformers

    from stlm import registry
    from stlm.interop.hf_t5 import export_hf_t5

    family, cfg = registry.get_config(args.model)
    torch.manual_seed(0)
    ours = registry.build_model(family, cfg).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_t5(ours, tmp)
        theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp).to(device)
    theirs.config.use_cache = True
    n_params = sum(p.numel() for p in {id(p): p for p in ours.parameters()}.values())
    print(
        f"{args.model}: {n_params:,} parameters; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.device} {args.dtype}, {torch.get_num_threads()} threads; median of {args.repeats} after {args.warmup} warm-up"
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()

    def batch(b: int, s: int, l: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(b * 1000 + s)
        inputs = torch.randint(2, cfg.vocab_size - 100, (b, s), generator=g).to(device)
        targets = torch.randint(2, cfg.vocab_size - 100, (b, l), generator=g).to(device)
        start = torch.zeros((b, 1), dtype=torch.long, device=device)
        return inputs, torch.cat([start, targets[:, :-1]], dim=1), targets

    def our_logits(inputs, dec_in):
        return ours(inputs, dec_in)

    def their_logits(inputs, dec_in):
        return theirs(input_ids=inputs, decoder_input_ids=dec_in, use_cache=False).logits

    # Same weights, same outputs: check before timing anything.
    inputs, dec_in, _ = batch(2, 64, 16)
    with torch.no_grad():
        diff = (our_logits(inputs, dec_in).float() - their_logits(inputs, dec_in).float()).abs().max().item()
    print(f"max |logit difference| on a 2 x 64/16 batch: {diff:.2e}")

    rows: list[tuple[str, float, float, str]] = []

    def interleaved(fn_ours, fn_theirs) -> tuple[float, float]:
        return timing.interleaved(fn_ours, fn_theirs, warmup=args.warmup, repeats=args.repeats, device=device)

    def train_step_fn(model, logits_fn, shapes):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
        inputs, dec_in, targets = batch(*shapes)

        def step() -> None:
            with autocast:
                logits = logits_fn(inputs, dec_in)
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    train_shapes = [] if "train" not in parts else [(8, 128, 32)] if args.quick else [(8, 512, 114), (8, 128, 32)]
    for shapes in train_shapes:
        ours.train()
        theirs.train()
        t_ours, t_theirs = interleaved(
            train_step_fn(ours, our_logits, shapes), train_step_fn(theirs, their_logits, shapes)
        )
        tokens = shapes[0] * (shapes[1] + shapes[2])
        rows.append(
            (f"train step {shapes[0]} x {shapes[1]}/{shapes[2]}", tokens / t_ours, tokens / t_theirs, "tokens/s")
        )

    ours.eval()
    theirs.eval()
    if "eval" in parts:
        eval_forward(rows, interleaved, batch, autocast, our_logits, their_logits)
    same = "gen" not in parts or greedy_generation(rows, args, device, batch, autocast, ours, theirs)

    print()
    print(f"{'measurement':34s} {'stlm':>10s} {'transformers':>13s} {'ratio':>7s}  unit")
    for name, a, b, unit in rows:
        ratio = b / a if unit == "ms/token" else a / b  # > 1 means stlm is faster
        print(f"{name:34s} {a:10.1f} {b:13.1f} {ratio:6.2f}x  {unit}")
    if "gen" in parts:
        print(f"\ngreedy outputs identical: {same}")


def eval_forward(rows, interleaved, batch, autocast, our_logits, their_logits) -> None:
    """Append the eval-forward row: tokens/s of one no-grad forward, 8 x 512/114."""
    inputs, dec_in, _ = batch(8, 512, 114)

    def forward(fn):
        def run() -> None:
            with torch.inference_mode(), autocast:
                fn(inputs, dec_in)

        return run

    t_ours, t_theirs = interleaved(forward(our_logits), forward(their_logits))
    tokens = 8 * (512 + 114)
    rows.append(("eval forward 8 x 512/114", tokens / t_ours, tokens / t_theirs, "tokens/s"))


def greedy_generation(rows, args, device, batch, autocast, ours, theirs) -> bool:
    """Append the generation rows (batch 1, 128 in -> 32 new, ms/token); return whether outputs agree.

    Timed with them, in the same rounds: the weight-streaming floor. At one token
    per step every decoder matrix and the LM head are read from memory once per
    token, and nothing else in the step is large, so no fp32 implementation can
    beat one encoder pass plus `new` matrix-vector sweeps over those weights
    (measured here with `torch.mv`, the fastest of the GEMV forms tried). The
    floor's ratio to transformers is the best ratio any implementation could
    print on this machine; it bounds the target.
    """
    from stlm.generation.seq2seq import generate_seq2seq

    prompt, _, _ = batch(1, 128, 1)
    new = 32
    outputs = {}

    def gen_ours() -> None:
        with autocast:
            outputs["ours"] = generate_seq2seq(
                ours, prompt, max_new_tokens=new, eos_id=-1
            )  # never stop early: time all 32

    def gen_theirs() -> None:
        with torch.inference_mode(), autocast:
            out = theirs.generate(
                input_ids=prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1
            )
        outputs["theirs"] = out[0, 1:].tolist()

    head = ours.embed.weight if ours.head is None else ours.head.weight  # (V, D)
    matrices = [
        m.weight.detach()
        for blk in ours.decoder
        for m in (blk.attn.qkv, blk.attn.out, blk.cross.q, blk.cross.out, blk.ff.wi, blk.ff.wo)
    ] + [head.detach()]
    vectors = {w.shape[1]: torch.randn(w.shape[1], device=device) for w in matrices}

    def floor() -> None:
        with torch.inference_mode():
            ours.encode(prompt)
            for _ in range(new):
                for w in matrices:
                    torch.mv(w, vectors[w.shape[1]])

    times = timing.interleaved_many(
        {"ours": gen_ours, "theirs": gen_theirs, "floor": floor},
        warmup=args.warmup,
        repeats=args.repeats,
        device=device,
    )
    same = list(outputs["ours"])[:new] == outputs["theirs"][:new]
    ms = {name: 1000 * t / new for name, t in times.items()}
    rows.append((f"greedy generation 1 x 128 -> {new}", ms["ours"], ms["theirs"], "ms/token"))
    weight_mb = sum(w.numel() * w.element_size() for w in matrices) / 1e6
    rows.append((f"  floor: encoder + {weight_mb:.0f} MB/token", ms["floor"], ms["theirs"], "ms/token"))
    return same


if __name__ == "__main__":
    main()
