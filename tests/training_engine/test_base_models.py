"""Base-model resolution: errors a person can act on, local folders, GGUF import, the embedded
default (slow)."""
from __future__ import annotations

import json
import time

import pytest

from tests.training_engine.tiny_gemma import PROMPT, gemma_tokenizer_dir, tiny_gemma_gguf  # noqa: F401
from training_app.engine.base_models import (
    EMBEDDED_GEMMA,
    PROVENANCE_FILE,
    BaseModelError,
    describe_base_model,
    resolve_base_model,
)


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(BaseModelError, match="does not exist"):
        resolve_base_model(str(missing), tmp_path / "cache")
    with pytest.raises(BaseModelError, match="does not exist"):
        resolve_base_model("./models/my.gguf", tmp_path / "cache")
    with pytest.raises(BaseModelError, match="No base model"):
        resolve_base_model("  ", tmp_path / "cache")


def test_folder_without_config(tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base_model(str(folder), tmp_path / "cache")

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(BaseModelError, match="LoRA adapter"):
        resolve_base_model(str(adapter), tmp_path / "cache")


def test_folder_with_config_but_no_weights_or_tokenizer(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    with pytest.raises(BaseModelError, match="no weights"):
        resolve_base_model(str(folder), tmp_path / "cache")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(BaseModelError, match="no tokenizer"):
        resolve_base_model(str(folder), tmp_path / "cache")


@pytest.mark.parametrize("content", [b"", b"this is not a model at all", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40])
def test_garbage_gguf(tmp_path, content):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(content)
    with pytest.raises(BaseModelError) as err:
        resolve_base_model(str(bad), tmp_path / "cache")
    assert str(bad) in str(err.value)
    assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_unknown_embedded_name(tmp_path):
    with pytest.raises(BaseModelError, match="embedded:gemma3-270m"):
        resolve_base_model("embedded:llama-9000", tmp_path)


def test_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    started = time.monotonic()
    with pytest.raises(BaseModelError) as err:
        resolve_base_model("vsm-test/definitely-not-cached-model", tmp_path / "cache")
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "vsm-test/definitely-not-cached-model" in msg
    assert "HF_HUB_OFFLINE" in msg and "local" in msg and EMBEDDED_GEMMA in msg


def test_local_folder_accepted_and_described(tiny_gemma_gguf, tmp_path):
    path = resolve_base_model(str(tiny_gemma_gguf), tmp_path / "cache")
    assert path == tiny_gemma_gguf.resolve()
    info = describe_base_model(path)
    assert info["architecture"] == "Gemma3ForCausalLM"
    assert info["model_type"] == "gemma3_text"
    assert info["vocab_size"] == 262144
    assert info["num_layers"] == 2
    assert info["dtype"] == "float32"
    assert info["has_chat_template"] is False
    # 262144 x 64 tied embedding + two small layers
    assert 262144 * 64 < info["parameters"] < 262144 * 64 + 500_000
    assert not (tmp_path / "cache").exists()  # nothing copied


def test_user_gguf_goes_through_the_import_once(tmp_path, monkeypatch):
    """A .gguf the user supplies is imported by the same code as the embedded default (that
    part is exercised for real by the slow test); here: naming, caching and provenance."""
    from training_app.engine import base_models

    calls = []

    def fake_import(gguf_path, target, source):
        calls.append(gguf_path)
        tmp = target.parent / ".building"
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text("{}")
        (tmp / PROVENANCE_FILE).write_text(json.dumps(source))
        return base_models._publish(tmp, target)

    monkeypatch.setattr(base_models, "_import_gguf_into", fake_import)
    gguf = tmp_path / "My Model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + b"\0" * 64)
    cache = tmp_path / "cache"
    path = resolve_base_model(str(gguf), cache)
    assert path.parent == cache and path.name.startswith("gguf-My-Model.Q4_K_M-")
    assert resolve_base_model(str(gguf), cache) == path
    assert len(calls) == 1
    prov = json.loads((path / PROVENANCE_FILE).read_text())
    assert prov["kind"] == "gguf" and len(prov["gguf_sha256"]) == 64
    # A file that is GGUF by content but not by name is recognised too.
    renamed = tmp_path / "model.bin"
    gguf.rename(renamed)
    other = resolve_base_model(str(renamed), cache)
    assert other.name == "gguf-model-" + prov["gguf_sha256"][:12] and len(calls) == 2


@pytest.mark.slow
def test_embedded_gemma_imports_generates_and_is_cached(embedded_gemma):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = embedded_gemma  # imported once per session by the fixture (shared with the SFT slow test)
    cache = path.parent
    assert (path / PROVENANCE_FILE).is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".") and p.is_dir()]  # no temp left

    started = time.monotonic()
    assert resolve_base_model(EMBEDDED_GEMMA, cache) == path
    assert time.monotonic() - started < 1.0

    info = describe_base_model(path)
    assert info["architecture"] == "Gemma3ForCausalLM"
    assert info["vocab_size"] == 262144
    assert 260e6 < info["parameters"] < 280e6
    assert info["source"] == "embedded"

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "capital" in text or "Paris" in text or "France" in text, text


def test_concurrent_imports_build_once(tmp_path, monkeypatch):
    """Two workers resolving the same GGUF at once: one builds, the other waits and reuses."""
    import threading

    from training_app.engine import base_models

    calls = []

    def slow_import(gguf_path, target, source):
        calls.append(1)
        time.sleep(0.5)
        tmp = target.parent / f".building-{len(calls)}"
        tmp.mkdir(parents=True)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(source))
        return base_models._publish(tmp, target)

    monkeypatch.setattr(base_models, "_import_gguf_into", slow_import)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + b"\0" * 64)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_base_model(str(gguf), tmp_path / "c")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")) == [results[0].name]
