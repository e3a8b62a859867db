"""`--precision auto` on a CPU: the probe's decision, its per-machine cache, and the runtime it yields.

Timings are injected (no clock is read in these tests): `measure(purpose, dtype)`
returns seconds, and a counter checks when the probe runs at all.
"""

from __future__ import annotations

import json

import pytest
import torch

from stlm.config import RuntimeConfig
from stlm.runtime import (
    BF16_MIN_SPEEDUP,
    choose_precision,
    cpu_auto_precision,
    decoding_runtime,
    describe_training,
    machine_key,
    resolve_runtime,
)


class FakeProbe:
    """Seconds per trial by dtype, and how many times each purpose was measured."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        self.seconds = {torch.float32: fp32_s, torch.bfloat16: bf16_s}
        self.calls: list[tuple[str, torch.dtype]] = []

    def __call__(self, purpose: str, dtype: torch.dtype) -> float:
        self.calls.append((purpose, dtype))
        return self.seconds[dtype]


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "want"),
    [
        (1.0, 0.38, "bf16"),  # AMX: 2.6x (issue 13's measured training speed-up)
        (1.0, 1.0 / BF16_MIN_SPEEDUP, "bf16"),  # exactly the margin
        (1.0, 0.9, "fp32"),  # a win inside the noise margin is not taken
        (1.0, 8.0, "fp32"),  # no bf16 units: emulated, several times slower
        (1.0, 0.0, "fp32"),  # a nonsense timing never picks bf16
    ],
)
def test_choose_precision_takes_bf16_only_when_it_clearly_wins(fp32_s, bf16_s, want):
    assert choose_precision(fp32_s, bf16_s) == want


def test_probe_measures_once_per_machine_and_purpose_then_reads_the_cache(tmp_path):
    cache = tmp_path / "cache" / "precision_probe.json"
    amx = FakeProbe(fp32_s=1.0, bf16_s=0.4)
    assert cpu_auto_precision("train", cache_file=cache, measure=amx, key="cpu A", today="2026-12-03") == (
        "bf16",
        "auto: bf16 matmuls 2.50x fp32's speed, probe measured now",
    )
    assert amx.calls == [("train", torch.float32), ("train", torch.bfloat16)]
    saved = json.loads(cache.read_text())
    assert saved == {"cpu A": {"train": {"fp32_s": 1.0, "bf16_s": 0.4, "measured": "2026-12-03"}}}

    def never(purpose, dtype):
        raise AssertionError("the cached result should have been used")

    choice, note = cpu_auto_precision("train", cache_file=cache, measure=never, key="cpu A")
    assert (choice, note) == ("bf16", "auto: bf16 matmuls 2.50x fp32's speed, probe cached 2026-12-03")

    # Another purpose on the same machine, and another machine, each measure for themselves.
    slow = FakeProbe(fp32_s=1.0, bf16_s=5.0)
    assert cpu_auto_precision("generate", cache_file=cache, measure=slow, key="cpu A")[0] == "fp32"
    assert cpu_auto_precision("train", cache_file=cache, measure=slow, key="cpu B")[0] == "fp32"
    assert len(slow.calls) == 4
    saved = json.loads(cache.read_text())
    assert set(saved) == {"cpu A", "cpu B"} and set(saved["cpu A"]) == {"train", "generate"}


def test_a_damaged_cache_is_measured_afresh_and_no_cache_file_keeps_nothing(tmp_path):
    cache = tmp_path / "precision_probe.json"
    cache.write_text('{"cpu A": {"train": {"fp32_s": "fast"}}}')
    probe = FakeProbe(fp32_s=1.0, bf16_s=4.0)
    assert cpu_auto_precision("train", cache_file=cache, measure=probe, key="cpu A")[0] == "fp32"
    assert len(probe.calls) == 2 and json.loads(cache.read_text())["cpu A"]["train"]["bf16_s"] == 4.0
    cache.write_text("not json")
    assert cpu_auto_precision("train", cache_file=cache, measure=probe, key="cpu A")[0] == "fp32"
    assert cpu_auto_precision("train", cache_file=None, measure=probe, key="cpu A")[0] == "fp32"
    assert len(probe.calls) == 6
    with pytest.raises(ValueError, match="purpose"):
        cpu_auto_precision("serve", cache_file=None, measure=probe)


@pytest.mark.parametrize(("bf16_s", "want"), [(0.3, "bf16"), (3.0, "fp32")])
def test_resolve_runtime_auto_on_cpu_follows_this_machines_cached_probe(tmp_path, bf16_s, want):
    cache = tmp_path / "precision_probe.json"
    entry = {"fp32_s": 1.0, "bf16_s": bf16_s, "measured": "2026-12-03"}
    cache.write_text(json.dumps({machine_key(): {"train": entry, "generate": entry}}))
    runtime = resolve_runtime(RuntimeConfig(device="cpu", precision="auto"), probe_cache=cache)
    assert runtime.precision == want
    # The run header's device line says what auto picked and why.
    assert f"{want} (auto: bf16 matmuls {1.0 / bf16_s:.2f}x fp32's speed, probe cached 2026-12-03)" in (
        runtime.describe()
    )
    generating = resolve_runtime(RuntimeConfig(device="cpu"), purpose="generate", probe_cache=cache)
    assert generating.precision == want
    # An explicit precision, or int8 weights, never consult the probe.
    assert resolve_runtime(RuntimeConfig(device="cpu", precision="fp32"), probe_cache=None).precision == "fp32"
    int8 = resolve_runtime(RuntimeConfig(device="cpu"), quantize="int8", probe_cache=None)
    assert int8.precision == "fp32" and int8.describe().endswith("fp32, int8 weights")


def test_a_training_run_generates_in_the_generate_probes_precision(tmp_path):
    # AMX-like: bf16 pays at training shapes, loses at one-row decode shapes.
    cache = tmp_path / "precision_probe.json"
    train = {"fp32_s": 1.0, "bf16_s": 0.3, "measured": "2026-12-05"}
    decode = {"fp32_s": 1.0, "bf16_s": 2.9, "measured": "2026-12-05"}
    cache.write_text(json.dumps({machine_key(): {"train": train, "generate": decode}}))
    auto = RuntimeConfig(device="cpu", precision="auto")
    runtime = resolve_runtime(auto, probe_cache=cache)
    decoding = decoding_runtime(auto, runtime, probe_cache=cache)
    assert (runtime.precision, decoding.precision) == ("bf16", "fp32")
    assert decoding.device == runtime.device and decoding.scaler is None
    assert "0.34x fp32's speed" in decoding.describe()
    assert describe_training(runtime, decoding) == f"{runtime.describe()}, answers generated in fp32"
    assert describe_training(runtime, runtime) == runtime.describe()
    # A precision the user set is kept for generation too: the probe is not asked.
    bf16 = RuntimeConfig(device="cpu", precision="bf16")
    set_runtime = resolve_runtime(bf16, probe_cache=None)
    assert decoding_runtime(bf16, set_runtime, probe_cache=None) is set_runtime
