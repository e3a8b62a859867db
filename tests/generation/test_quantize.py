"""int8 weights (`--quantize int8`): every family decodes as in fp32, within int8's rounding; bad values are one line.

Tolerance. Per-channel int8 weights are rounded to 1/254 of their row's largest
magnitude and each activation row to 1/254 of its range (fbgemm keeps 7 bits:
another factor 2), independent errors that partly cancel over a dot product.
Carried through every layer of a random tiny model that came to 8-12% of the
logits' standard deviation (decoder-tiny, pooled-tiny, t5-debug, seed 0), so
the bound is 25% of it: a real defect (a wrong scale, a transposed or missing
matrix, an unquantized path left on stale weights) moves logits by about their
whole spread. Greedy tokens must be equal outright: the seeded models'
top-two margins are wider than that noise.
"""

from __future__ import annotations

import copy

import pytest
import torch

import stlm
from stlm import registry
from stlm.cli.main import main
from stlm.errors import UserError
from stlm.generation.decoder import generate
from stlm.generation.quantize import count_int8_linears
from stlm.generation.seq2seq import generate_seq2seq_batch, stream_seq2seq
from tests.conftest import seeded_model

REL_TOLERANCE = 0.25  # of the fp32 logits' standard deviation (see the module docstring)


def _linears(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@pytest.mark.parametrize("name", ["decoder-tiny", "pooled-tiny"])
def test_causal_int8_greedy_and_logits_follow_fp32(name, one_thread):
    family, fp32 = seeded_model(name)
    int8 = registry.get_family(family).quantize(copy.deepcopy(fp32), "int8")
    # Every Linear replaced, the tied head included (a copy; the embedding stays fp32).
    assert count_int8_linears(int8) == _linears(fp32) and _linears(int8) == 0
    prompt = [1, *range(60, 90)]
    want = list(generate(fp32, prompt, max_new_tokens=20, temperature=0, stop_ids=()))
    got = list(generate(int8, prompt, max_new_tokens=20, temperature=0, stop_ids=()))
    assert got == want
    ids = torch.tensor([prompt + want])  # (1, T)
    with torch.inference_mode():
        ref, out = fp32(ids), int8(ids)  # (1, T, V) each
    assert (out - ref).abs().max() <= REL_TOLERANCE * ref.std()


def test_t5_int8_cached_decoding_follows_fp32_with_its_tied_head_quantized(one_thread):
    family, fp32 = seeded_model("t5-debug")
    int8 = registry.get_family(family).quantize(copy.deepcopy(fp32), "int8")
    assert fp32.head is None and int8.head is not None  # tied: given its own head, then quantized
    assert count_int8_linears(int8) == _linears(fp32) + 1 and _linears(int8) == 0
    source = list(range(5, 30))
    # The streamed loop runs the cached fast path (`T5Model._decode_cached`) with the replaced linears.
    want = list(stream_seq2seq(fp32, source, max_new_tokens=20, eos_id=-1))
    got = list(stream_seq2seq(int8, source, max_new_tokens=20, eos_id=-1))
    assert got == want
    assert generate_seq2seq_batch(int8, [source, source[:9]], max_new_tokens=8, eos_id=-1)[0] == want[:8]
    decoder_in = torch.tensor([[fp32.config.decoder_start_id, *want[:-1]]])  # (1, L)
    with torch.inference_mode():
        ref, out = fp32(torch.tensor([source]), decoder_in), int8(torch.tensor([source]), decoder_in)
    assert (out - ref).abs().max() <= REL_TOLERANCE * ref.std()


def test_t5_untie_head_keeps_the_logits(one_thread):
    _, model = seeded_model("t5-debug")
    source, decoder_in = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[0, 9, 10]])
    with torch.inference_mode():
        before = model(source, decoder_in)
        model.untie_head()
        after = model(source, decoder_in)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_api_and_cli_quantize_int8_and_reject_unknown_values_in_one_line(
    tiny_run, corpus_dir, one_thread, capsys, tmp_path
):
    fp32 = stlm.load(tiny_run, device="cpu", precision="fp32")
    int8 = stlm.load(tiny_run, device="cpu", quantize="int8")
    assert count_int8_linears(int8.module) > 0 and "int8 weights" in int8.runtime.describe()
    text = "The quick brown fox jumps over the lazy dog. " * 4
    assert abs(int8.bits_per_byte(text) - fp32.bits_per_byte(text)) < 0.02
    assert isinstance(int8.generate("The ", max_new_tokens=5, greedy=True), str)

    with pytest.raises(UserError) as err:
        stlm.load(tiny_run, device="cpu", quantize="int4")
    assert str(err.value) == "unknown quantize 'int4'; use one of none, int8"
    with pytest.raises(UserError, match="keeps activations in fp32"):
        stlm.load(tiny_run, device="cpu", quantize="int8", precision="bf16")

    for argv in (["generate", tiny_run, "--quantize", "int4"], ["evaluate", tiny_run, "--quantize", "fp4"]):
        assert main([str(a) for a in argv]) == 2
        err_text = capsys.readouterr().err.strip()
        assert len(err_text.splitlines()) == 1 and "unknown quantize" in err_text and "Traceback" not in err_text
    assert main(["generate", str(tiny_run), "--quantize", "int8", "--greedy", "--max-new-tokens", "4"]) == 0
    # evaluate --quantize int8 records its own result beside fp32's, never over it.
    argv = ["evaluate", tiny_run, "--data", corpus_dir, "--max-ids", 600, "--quiet", "--out", tmp_path]
    assert main([str(a) for a in argv]) == 0 and main([str(a) for a in [*argv, "--quantize", "int8"]]) == 0
    plain, int8_file = sorted(tmp_path.glob("*.json"), key=lambda p: len(p.name))
    assert int8_file.name == plain.name.replace(".json", "-int8.json")
    assert "int8 weights" in int8_file.read_text() and "int8 weights" not in plain.read_text()
