"""Model sources: Hugging Face and ModelScope ids, prefixes, the default hub, local caches, and offline
failures that name the hub that was tried and how to use a local copy instead, fast."""
from __future__ import annotations

import shutil
import time

import pytest

from inference_app.engine.index import EncoderError, resolve_encoder_path
from training_app.engine import model_sources as sources
from training_app.engine.base_models import EMBEDDED_GEMMA, BaseModelError, resolve_base_model


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty hub caches and both hubs' endpoints on a closed local port: as on a machine offline."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MODELSCOPE_OFFLINE", "VSM_OFFLINE", "VSM_MODEL_HUB"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize("spec,expected", [
    ("hf:Qwen/Qwen2.5-0.5B", ("huggingface", "Qwen/Qwen2.5-0.5B")),
    ("modelscope:qwen/Qwen2.5-0.5B-Instruct", ("modelscope", "qwen/Qwen2.5-0.5B-Instruct")),
    ("MS:qwen/Qwen2.5-0.5B", ("modelscope", "qwen/Qwen2.5-0.5B")),
    ("huggingface:BAAI/bge-small-zh", ("huggingface", "BAAI/bge-small-zh")),
    ("Qwen/Qwen2.5-0.5B", (None, "Qwen/Qwen2.5-0.5B")),
    ("/models/qwen", (None, "/models/qwen")),
])
def test_specs_name_their_hub(spec, expected):
    assert sources.split_spec(spec) == expected


CASES = [  # spec, VSM_MODEL_HUB, the hub named in the message, the command to get a local copy
    ("modelscope:qwen/Qwen2.5-0.5B-Instruct", "", "ModelScope", "modelscope download --model qwen/Qwen2.5-0.5B-Instruct"),
    ("qwen/Qwen2.5-0.5B-Instruct", "modelscope", "ModelScope", "modelscope download --model"),
    ("hf:Qwen/Qwen2.5-0.5B-Instruct", "modelscope", "Hugging Face", "huggingface-cli download Qwen/Qwen2.5-0.5B"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "", "Hugging Face", "huggingface-cli download"),
]


@pytest.mark.parametrize("spec,default,hub,command", CASES)
def test_a_base_model_hub_id_offline_fails_fast_naming_the_hub(no_network, monkeypatch, spec, default, hub, command):
    if default:
        monkeypatch.setenv("VSM_MODEL_HUB", default)
    started = time.monotonic()
    with pytest.raises(BaseModelError) as err:
        resolve_base_model(spec, no_network / "cache")
    assert time.monotonic() - started < 10
    msg = str(err.value)
    assert f"{hub} model" in msg and "cannot be reached" in msg and "127.0.0.1:9" in msg
    assert command in msg and "give its path" in msg and EMBEDDED_GEMMA in msg


@pytest.mark.parametrize("flag", ["MODELSCOPE_OFFLINE", "VSM_OFFLINE"])
def test_an_offline_flag_stops_modelscope_before_any_connection(no_network, monkeypatch, flag):
    monkeypatch.setenv(flag, "1")
    monkeypatch.setattr(sources, "reachable", lambda hub, timeout=3.0: pytest.fail("tried the network"))
    with pytest.raises(BaseModelError, match=f"ModelScope model 'qwen/x' is not in the local ModelScope cache "
                                             f"and {flag} is set"):
        resolve_base_model("modelscope:qwen/x", no_network / "cache")


@pytest.mark.parametrize("spec,hub", [("modelscope:BAAI/bge-small-zh-v1.5", "ModelScope"),
                                      ("hf:BAAI/bge-small-zh-v1.5", "Hugging Face")])
def test_an_embedding_model_hub_id_offline_fails_naming_the_hub(no_network, spec, hub):
    with pytest.raises(EncoderError) as err:
        resolve_encoder_path(spec)
    msg = str(err.value)
    assert f"{hub} embedding model 'BAAI/bge-small-zh-v1.5'" in msg and "cannot be reached" in msg
    assert "embedded:all-minilm-l6-v2" in msg


def test_not_an_id_is_refused(no_network):
    with pytest.raises(BaseModelError, match="not a ModelScope model id"):
        resolve_base_model("modelscope:../../etc", no_network / "cache")


def test_a_model_in_the_modelscope_cache_is_used_without_the_network(no_network, tiny_models, monkeypatch):
    """The layout modelscope's snapshot_download writes: models/<org>--<name>/snapshots/<rev>, refs/master."""
    repo = no_network / "ms" / "models" / "vsm--tiny-qwen"
    shutil.copytree(tiny_models["qwen"], repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "master").write_text("abc123")
    monkeypatch.setattr(sources, "reachable", lambda hub, timeout=3.0: pytest.fail("tried the network"))
    path = resolve_base_model("modelscope:vsm/tiny-qwen", no_network / "cache")
    assert path == (repo / "snapshots" / "abc123").resolve() and (path / "config.json").is_file()
    # a cached copy without weights is named as incomplete, with the way out
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(BaseModelError, match="incomplete in the local ModelScope cache.*modelscope download"):
        resolve_base_model("modelscope:vsm/tiny-qwen", no_network / "cache")


@pytest.mark.parametrize("spec,hub,expected", [
    ("qwen/Qwen2.5-0.5B", "modelscope", "modelscope:qwen/Qwen2.5-0.5B"),
    ("Qwen/Qwen2.5-0.5B", "huggingface", "hf:Qwen/Qwen2.5-0.5B"),
    ("qwen/Qwen2.5-0.5B", "", "qwen/Qwen2.5-0.5B"),                        # the default hub decides later
    ("hf:Qwen/Qwen2.5-0.5B", "modelscope", "hf:Qwen/Qwen2.5-0.5B"),       # the run's own choice wins
    ("embedded:gemma3-270m", "modelscope", "embedded:gemma3-270m"),
    ("/models/qwen", "modelscope", "/models/qwen"),
    ("model.gguf", "modelscope", "model.gguf"),
])
def test_a_domain_hub_qualifies_bare_ids_only(spec, hub, expected):
    assert sources.qualify(spec, hub) == expected
