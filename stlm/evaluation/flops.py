"""FLOPs a piece of model code actually executes: matmuls and attention, from their real shapes.

    count_flops(lambda: model(ids))                        # one forward pass
    count_flops(lambda: model_loss(model, w).backward())   # one training step, forward + backward

Counted with torch's `FlopCounterMode` while the code runs, so whatever the
model really does is what is counted: a pooled model's core runs on the
patches its boundary rule formed in this input, a BPE model on its tokens.
A multiply-add is 2 FLOPs. Attention counts the full query x key score and
value matmuls, masked or not, and its backward five matmuls of that size (the
flash kernels recompute the scores), as torch's own formulas do; the CPU
flash-attention kernels, which torch's table leaves out, are added here.
Elementwise work (norms, activations, softmax) and the optimizer are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

_aten = torch.ops.aten


def _sdpa_forward(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)  # QK^T and PV: 2 x 2*B*H*Tq*Tk*Dh


def _sdpa_backward(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)  # five matmuls of that size


_CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmuls and attention that `fn()` executes (see the module docstring)."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    with counter:
        fn()
    return int(counter.get_total_flops())
