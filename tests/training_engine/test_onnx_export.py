"""ONNX export of the embedded default embedding model: float32 and int8 reproduce PyTorch (cosine ≥ 0.99),
the exported folder encodes without torch's model code, bad input fails clearly and leaves nothing."""
from __future__ import annotations

import json

import pytest

from inference_app.engine.index import embedded_encoder_path
from training_app.engine.export import ExportError
from training_app.engine.onnx_export import MANIFEST, OnnxEncoder, export_embedding_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "minilm"
    return export_embedding_onnx(embedded_encoder_path(), out), out


def test_fp32_and_int8_onnx_match_pytorch_on_the_embedded_default(exported):
    result, out = exported
    assert result.dim == 384 and result.texts >= 8
    assert result.min_cosine["fp32"] >= 0.9999 and result.min_cosine["int8"] >= 0.99
    assert result.bytes["int8"] < result.bytes["fp32"] / 2 and result.rejected == {}  # int8 weights
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == {"fp32": "model.onnx", "int8": "model_int8.onnx"} and manifest["dim"] == 384
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()


def test_the_exported_folder_retrieves_like_the_pytorch_model(exported):
    """Cross-platform retrieval: rank passages for a query with onnxruntime alone, as PyTorch ranks them."""
    from sentence_transformers import SentenceTransformer

    _result, out = exported
    passages = ["The drive shows E100 when the output current is too high.",
                "Invoices of 3,000 yuan or more need a signed agreement.",
                "Keep the cabinet below 40 °C for the rated output."]
    query = ["What does fault E100 mean?"]
    torch_model = SentenceTransformer(str(embedded_encoder_path()), device="cpu")
    expected = (torch_model.encode(query, normalize_embeddings=True)
                @ torch_model.encode(passages, normalize_embeddings=True).T)[0]
    for kind in ("fp32", "int8"):
        encoder = OnnxEncoder(out, kind=kind)
        scores = (encoder.encode(query) @ encoder.encode(passages).T)[0]
        assert scores.argmax() == expected.argmax() == 0  # the fault-code passage, as PyTorch ranks it
        assert scores == pytest.approx(expected, abs=0.02)
        # batches of any size give the same vectors (padding does not leak into the pooling)
        assert encoder.encode(passages, batch_size=1) == pytest.approx(encoder.encode(passages), abs=1e-4)


def test_bad_input_fails_clearly_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_embedding_onnx(tmp_path / "nope", tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ExportError, match="could not be loaded"):
        export_embedding_onnx(broken, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]  # no temp folder left behind


def test_a_threshold_the_export_cannot_reach_fails_it(tmp_path):
    with pytest.raises(ExportError, match="does not reproduce the PyTorch embeddings"):
        export_embedding_onnx(embedded_encoder_path(), tmp_path / "out", int8=False, min_cosine=1.01)
    assert not (tmp_path / "out").exists()


def test_an_int8_model_below_the_threshold_is_dropped_and_float32_kept(tmp_path):
    result = export_embedding_onnx(embedded_encoder_path(), tmp_path / "out", min_cosine=0.9995)
    assert result.min_cosine["fp32"] >= 0.9995 and result.min_cosine["int8"] < 0.9995
    assert set(result.files) == {"fp32"} and "int8" in result.rejected and "0.9995" in result.rejected["int8"]
    assert not (tmp_path / "out" / "model_int8.onnx").exists()
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["files"] == {"fp32": "model.onnx"}
