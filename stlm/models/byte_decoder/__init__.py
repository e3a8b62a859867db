"""The pooled byte language model family: bytes pooled into patches for a deep-narrow core."""

from stlm.models.byte_decoder.boundaries import mean_patch_length
from stlm.models.byte_decoder.config import (
    PooledByteConfig,
    Sharing,
    count_params,
    param_breakdown,
    sharing_options,
    sharing_total,
)
from stlm.models.byte_decoder.model import PooledByteLM, PooledCache
from stlm.models.byte_decoder.presets import PRESETS

__all__ = [
    "PRESETS",
    "PooledByteConfig",
    "PooledByteLM",
    "PooledCache",
    "Sharing",
    "count_params",
    "mean_patch_length",
    "param_breakdown",
    "sharing_options",
    "sharing_total",
]
