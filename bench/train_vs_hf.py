"""stlm's training step against Hugging Face transformers' on the same shapes, in the same run.

Two pairs, each timed interleaved (ours, theirs, ours, ...) so machine noise
hits both alike; each figure is the median of timed steps after warm-up:

1. decoder: stlm `decoder-25m` (8 layers, width 512, 8 heads, rotary, SwiGLU
   d_ff 1408, tied embeddings, byte vocabulary 264) against transformers'
   GPT2LMHeadModel of the same layers, width and heads (learned absolute
   positions up to 1024, GELU MLP 4x, tied embeddings, vocab 264, dropout 0).
   Equal layers, width and (to within 0.2%) parameters; the MLPs differ in kind
   (gated 3 x D x 1408 against plain 2 x D x 2048), the FLOPs are counted per
   side.
2. T5: stlm `t5-efficient-tiny-nl32` against transformers'
   T5ForConditionalGeneration built from our exported weights (identical network).

A step is forward, cross-entropy on fp32 logits, backward, AdamW (fused on
both sides), zero_grad. Printed per side: tokens/s, MFU (model matmul FLOPs
counted from the actual shapes by torch's FLOP counter / the matmul peak
measured in this run at 1024^3), and the ratio ours / theirs.

    .venv/bin/python bench/train_vs_hf.py                 # both pairs, 8 x 512, fp32, 2 threads
    .venv/bin/python bench/train_vs_hf.py --only decoder --repeats 5
    .venv/bin/python bench/train_vs_hf.py --device cuda --dtype bf16 --batch 32
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
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["decoder", "t5"], help="run one pair only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512, help="decoder tokens per row; T5 encoder input length")
    parser.add_argument("--t5-targets", type=int, default=114, help="T5 decoder length")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--tuned-malloc", action="store_true", help="apply stlm's CPU allocator settings (process-wide: both sides)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import transformers

    from stlm.runtime import tune_cpu_allocator
    from stlm.training.flops import matmul_peak, training_step_flops

    if args.tuned_malloc:
        print(f"CPU allocator tuned: {tune_cpu_allocator()}")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = matmul_peak(device, dtype)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {args.device} {args.dtype}, "
        f"{torch.get_num_threads()} threads; {args.dtype} matmul peak at 1024^3: {peak / 1e9:,.0f} GFLOP/s; "
        f"median of {args.repeats} steps after {args.warmup} warm-up"
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()

    def interleaved(fn_ours, fn_theirs) -> tuple[float, float]:
        return timing.interleaved(fn_ours, fn_theirs, warmup=args.warmup, repeats=args.repeats, device=device)

    def step_fn(model, loss_fn, tensors):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))

        def step() -> None:
            with autocast:
                loss = loss_fn(model, *tensors)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    rows = []
    ceilings = []  # (label, seconds in matmul and attention kernels, our step, their step)

    def compare(label, ours, theirs, loss_ours, loss_theirs, tensors, tokens):
        n_ours, n_theirs = (sum(p.numel() for p in {id(p): p for p in m.parameters()}.values()) for m in (ours, theirs))
        # Both sides counted the same way: one real forward + backward of a single row, times the batch.
        row = tuple(t[:1] for t in tensors)
        f_ours = args.batch * training_step_flops(ours, loss_ours, row)
        f_theirs = args.batch * training_step_flops(theirs, loss_theirs, row)
        ours.train()
        theirs.train()
        t_ours, t_theirs = interleaved(step_fn(ours, loss_ours, tensors), step_fn(theirs, loss_theirs, tensors))
        rows.append((label, "stlm", n_ours, tokens / t_ours, f_ours / t_ours / peak, f_ours))
        rows.append((label, "transformers", n_theirs, tokens / t_theirs, f_theirs / t_theirs / peak, f_theirs))
        print(
            f"  {label}: stlm {tokens / t_ours:,.0f} tokens/s, transformers {tokens / t_theirs:,.0f} tokens/s "
            f"-> {t_theirs / t_ours:.2f}x",
            flush=True,
        )
        kernels = kernel_seconds(step_fn(ours, loss_ours, tensors)) if device.type == "cpu" else float("nan")
        ceilings.append((label, kernels, t_ours, t_theirs))

    g = torch.Generator().manual_seed(0)
    b, s = args.batch, args.seq
    if args.only in (None, "decoder"):
        from stlm import registry
        from stlm.objectives.next_token import model_loss

        family, cfg = registry.get_config("decoder-25m")
        torch.manual_seed(0)
        ours = registry.build_model(family, cfg).to(device)
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=1024,
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
        )
        hf_cfg._attn_implementation = "sdpa"
        theirs = transformers.GPT2LMHeadModel(hf_cfg).to(device)
        window = torch.randint(0, 256, (b, s + 1), generator=g).to(device)

        def their_loss(model, window):
            logits = model(input_ids=window[:, :-1], use_cache=False).logits
            return F.cross_entropy(logits.float().flatten(0, 1), window[:, 1:].flatten())

        compare(
            f"decoder {b} x {s}",
            ours,
            theirs,
            model_loss,
            their_loss,
            (window,),
            b * s,
        )
        del ours, theirs

    if args.only in (None, "t5"):
        from stlm import registry
        from stlm.interop.hf_t5 import export_hf_t5
        from stlm.objectives.seq2seq import seq2seq_loss

        family, cfg = registry.get_config("t5-efficient-tiny-nl32")
        torch.manual_seed(0)
        ours = registry.build_model(family, cfg).to(device)
        with tempfile.TemporaryDirectory() as tmp:
            export_hf_t5(ours, tmp)
            theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp).to(device)
        L = args.t5_targets
        inputs = torch.randint(2, cfg.vocab_size - 100, (b, s), generator=g).to(device)
        targets = torch.randint(2, cfg.vocab_size - 100, (b, L), generator=g).to(device)

        def our_loss(model, inputs, targets):
            return seq2seq_loss(model, inputs, targets, pad_id=0, decoder_start_id=0)

        def their_loss(model, inputs, targets):
            start = torch.zeros((targets.shape[0], 1), dtype=targets.dtype, device=targets.device)
            dec_in = torch.cat([start, targets[:, :-1]], dim=1)
            logits = model(input_ids=inputs, decoder_input_ids=dec_in, use_cache=False).logits
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

        compare(
            f"t5-efficient-tiny-nl32 {b} x {s}/{L}",
            ours,
            theirs,
            our_loss,
            their_loss,
            (inputs, targets),
            b * (s + L),
        )

    print()
    print(f"{'training step':34s} {'side':13s} {'params':>11s} {'GFLOP/step':>11s} {'tokens/s':>9s} {'MFU':>6s}")
    for label, side, n, tps, mfu, flops in rows:
        print(f"{label:34s} {side:13s} {n:11,d} {flops / 1e9:11.1f} {tps:9,.0f} {100 * mfu:5.1f}%")
    for i in range(0, len(rows), 2):
        (label, _, _, tps, mfu, flops), (_, _, _, tps_hf, mfu_hf, flops_hf) = rows[i], rows[i + 1]
        print(f"ratio stlm / transformers, {label}: {tps / tps_hf:.2f}x tokens/s")
        # tokens/s = tokens * MFU * peak / FLOPs, so a target ratio R asks for this MFU on our side:
        target = TARGETS["t5" if label.startswith("t5") else "decoder"]
        need = target * mfu_hf * flops / flops_hf
        print(
            f"  target {target}x needs stlm at {100 * need:.1f}% MFU (now {100 * mfu:.1f}%; 100% is the 1024^3 matmul peak)"
        )
        if args.device == "cpu":
            _, kernels, t_ours, t_theirs = ceilings[i // 2]
            print(
                f"  stlm spends {kernels:.2f} s of its {t_ours:.2f} s step in matmul and attention kernels "
                f"({100 * kernels / t_ours:.0f}%); with all other work free it would be {t_theirs / kernels:.2f}x"
            )


def kernel_seconds(step) -> float:
    """Seconds one training step spends inside matmul and attention kernels (torch profiler, self time).

    What is left of a step when everything else (norms, activations, softmax
    outside attention, optimizer, loss, dispatch) costs nothing: the time an
    implementation doing these same matmuls at these same kernel speeds
    cannot go below. Profiling inflates small ops, not these kernels' own time.
    """
    from torch.profiler import ProfilerActivity, profile

    step()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in KERNELS) / 1e6


KERNELS = {
    "aten::mm",
    "aten::addmm",
    "aten::addmm_",
    "aten::bmm",
    "aten::baddbmm",
    "aten::baddbmm_",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
}


# The issues' CPU targets: ours / transformers tokens/s for a training step.
TARGETS = {"decoder": 1.3, "t5": 1.5}


if __name__ == "__main__":
    main()
