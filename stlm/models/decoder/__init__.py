"""The plain decoder-only transformer family (token-level baseline)."""

from stlm.models.decoder.config import DecoderConfig, count_params
from stlm.models.decoder.model import DecoderLM
from stlm.models.decoder.presets import PRESETS

__all__ = ["PRESETS", "DecoderConfig", "DecoderLM", "count_params"]
