"""`stlm export` of a T5: hf with tokenizer files, ONNX (encoder, decoder, decoder with past),
CTranslate2, and the JAX/Flax route through transformers 4.57 where those versions are installed.

The run is a byte T5 (ByT5's vocabulary): its exported tokenizer must give stlm's
ids, sentinel markup included, where transformers used to load a wrong SentencePiece one.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch

from stlm import api
from stlm.tokenizers import ByT5Tokenizer
from tests.interop.export_runs import MIXED_TEXT

SOURCE = "The <extra_id_0> walks in <extra_id_1> park. " + MIXED_TEXT


@pytest.fixture(scope="module")
def run(t5_export_run):
    return t5_export_run


@pytest.fixture(scope="module")
def model(run):
    return api.load(run, device="cpu")


@pytest.fixture(scope="module")
def source(model):
    return model.family.prompt_ids(model.tokenizer, SOURCE)


@pytest.fixture(scope="module")
def greedy(model, source):
    ids = model.family.generate_greedy(model.module, [source], eos_id=1, max_new_tokens=24)[0]
    assert len(set(ids)) > 3  # varied output, so a wrong position or cache would show
    return ids


@pytest.fixture(scope="module")
def hf_dir(run, tmp_path_factory):
    return api.export(run, tmp_path_factory.mktemp("hf") / "t5", "hf")


def test_hf_export_writes_a_tokenizer_that_gives_stlm_ids(hf_dir, source):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert tokenizer(SOURCE).input_ids == source
    assert tokenizer.convert_ids_to_tokens(source[3]) == "<extra_id_0>" and source[3] == ByT5Tokenizer().sentinel_id(0)
    assert tokenizer.decode(ByT5Tokenizer().encode(MIXED_TEXT)) == MIXED_TEXT


def test_onnx_logits_and_greedy(run, model, source, greedy, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from stlm.interop.onnx_export import greedy_t5

    out = api.export(run, tmp_path / "onnx", "onnx")
    assert greedy_t5(out, source, 24) == greedy
    # Logits of every decoder position, through decoder.onnx then decoder_with_past.onnx, within 1e-4.
    sessions = {
        name: ort.InferenceSession(str(out / f"{name}.onnx")) for name in ("encoder", "decoder", "decoder_with_past")
    }
    ids, mask = np.array([source]), np.ones((1, len(source)), np.int64)
    target = [0, *greedy]
    with torch.no_grad():
        reference = model.module(torch.tensor(ids), torch.tensor([target]))[0].numpy()  # (L, V)
    (memory,) = sessions["encoder"].run(None, {"input_ids": ids, "attention_mask": mask})
    n = model.module.config.n_decoder_layers
    first = {
        "decoder_input_ids": np.array([target[:2]]),
        "encoder_hidden_states": memory,
        "encoder_attention_mask": mask,
    }
    logits, *caches = sessions["decoder"].run(None, first)
    past, cross = caches[: 2 * n], caches[2 * n :]
    pieces = [logits[0]]
    names = [f"{kind}_{part}.{i}" for kind in ("past", "cross") for i in range(n) for part in ("key", "value")]
    for token in target[2:]:
        feeds = dict(zip(names, [*past, *cross]), decoder_input_ids=np.array([[token]]), encoder_attention_mask=mask)
        logits, *past = sessions["decoder_with_past"].run(None, feeds)
        pieces.append(logits[0])
    assert np.abs(np.concatenate(pieces) - reference).max() < 1e-4


def test_ctranslate2_greedy_equals_stlm(run, hf_dir, source, greedy, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for dtype in ("float32", "int8"):
        out = api.export(run, tmp_path / dtype, "ct2", dtype)
        translator = ctranslate2.Translator(str(out), device="cpu", compute_type=dtype)
        result = translator.translate_batch(
            [tokenizer.convert_ids_to_tokens(source)], beam_size=1, max_decoding_length=24
        )[0]
        ids = tokenizer.convert_tokens_to_ids(result.hypotheses[0])
        if dtype == "float32":
            assert ids == greedy
        else:  # int8 weights on a random model: a valid continuation, not the same one
            assert len(ids) > 0 and all(0 <= i < 384 for i in ids)


FLAX_VERSIONS = {"transformers": "4.57", "jax": "0.4.38", "flax": "0.10.2"}
TF_VERSIONS = {"transformers": "4.57", "tensorflow": "2.18", "tf-keras": "2.18"}


def _route_missing(route: str, versions: dict[str, str], why: str) -> str | None:
    for package, version in versions.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not installed.startswith(version):
            needs = ", ".join(f"{p} {v}" for p, v in versions.items())
            return f"the {route} route needs {needs} ({why}): {package} is {installed}"
    return None


def _flax_route_missing() -> str | None:
    return _route_missing(
        "JAX/Flax", FLAX_VERSIONS, "transformers 5 dropped its Flax classes; newer jax breaks the port"
    )


def _tf_route_missing() -> str | None:
    return _route_missing("TensorFlow", TF_VERSIONS, "transformers 5 dropped its TensorFlow classes")


@pytest.mark.skipif(_flax_route_missing() is not None, reason=str(_flax_route_missing()))
def test_flax_t5_loads_the_hf_export(model, hf_dir, source, greedy):
    import transformers

    flax_model = transformers.FlaxT5ForConditionalGeneration.from_pretrained(hf_dir, from_pt=True)
    target = [0, *greedy]
    logits = np.asarray(flax_model(input_ids=np.array([source]), decoder_input_ids=np.array([target])).logits[0])
    with torch.no_grad():
        reference = model.module(torch.tensor([source]), torch.tensor([target]))[0].numpy()
    assert np.abs(logits - reference).max() < 1e-4


@pytest.mark.skipif(_tf_route_missing() is not None, reason=str(_tf_route_missing()))
def test_tensorflow_t5_loads_the_hf_export(model, hf_dir, source, greedy):
    import transformers

    tf_model = transformers.TFT5ForConditionalGeneration.from_pretrained(hf_dir, from_pt=True)
    target = [0, *greedy]
    logits = tf_model(input_ids=np.array([source]), decoder_input_ids=np.array([target])).logits.numpy()[0]
    with torch.no_grad():
        reference = model.module(torch.tensor([source]), torch.tensor([target]))[0].numpy()
    assert np.abs(logits - reference).max() < 1e-4
