"""The T5 encoder-decoder family: T5-Efficient sizes by name, interchangeable with HF checkpoints."""

from stlm.models.t5.config import T5Config, count_params
from stlm.models.t5.model import T5Cache, T5Model, relative_position_bucket, shift_right
from stlm.models.t5.presets import GRAMMAR, PRESETS, config_from_name

__all__ = [
    "GRAMMAR",
    "PRESETS",
    "T5Cache",
    "T5Config",
    "T5Model",
    "config_from_name",
    "count_params",
    "relative_position_bucket",
    "shift_right",
]
