"""Embedding runs end to end in-process on a tiny BERT: frozen version → run → model version with a
retrieval evaluation → promoted → the index is rebuilt with it."""
from __future__ import annotations

import zipfile

import pytest
from django.core.exceptions import ValidationError

from datasets_app import services as dataset_services
from datasets_app import versions
from datasets_app.models import QADataset
from domains.jobs import run_job
from domains.models import Job
from inference_app import services as retrieval
from inference_app.models import RetrievalIndex
from training_app import services
from training_app.models import ModelExport, ModelVersion, TrainingRun

from .test_distill_jobs import make_chunks
from .training_engine.tiny_bert import tiny_bert  # noqa: F401 - the fixture is used by name

ARTICLES = [("第%d条" % i, text) for i, text in enumerate([
    "报销单据金额在3000元及以上的，需要签订协议。",
    "单笔支出达到10000元及以上的，必须签订合同。",
    "出差人员应当在返回后10个工作日内办理报销手续。",
    "住宿费标准为每人每天500元，超出部分由个人承担。",
    "本办法由财务处负责解释，自2024年3月1日起施行。",
    "会议费报销需要会议通知、签到表和发票。",
], start=1)]
QUESTIONS = [["多少金额需要协议？", "协议的金额门槛？"], ["什么时候必须签合同？", "合同的金额门槛？"],
             ["出差后几天内报销？", "差旅报销期限？"], ["住宿每天多少钱？", "住宿标准？"],
             ["谁负责解释办法？", "办法何时施行？"], ["会议费要什么材料？", "会议报销材料？"]]
FAST = {"epochs": 3, "batch_size": 4, "learning_rate": 5e-3}


@pytest.fixture
def version(domain, bob, data_dir):
    _doc, chunks = make_chunks(domain, texts=ARTICLES)
    dataset = QADataset.default_for(domain)
    for chunk, (train_q, test_q) in zip(chunks, QUESTIONS):
        dataset_services.add_pair(dataset=dataset, by=bob, question=train_q, answer=chunk.text[:12], chunk=chunk,
                                  approve=True)
        dataset_services.add_pair(dataset=dataset, by=bob, question=test_q, answer=chunk.text[:12], chunk=chunk,
                                  approve=True, held_out=True)
    return versions.freeze_dataset(dataset=dataset, by=bob).version


def test_an_embedding_run_trains_evaluates_and_its_promotion_rebuilds_the_index(
        domain, alice, bob, version, tiny_bert, sent, client_as, django_capture_on_commit_callbacks):  # noqa: F811
    make_chunks(domain, texts=[(f"第{i}条", f"设备故障代码E{100 + i}表示过流，请检查电机电缆。") for i in range(6)],
                filename="设备手册.pdf")  # a second document, for the clustering report
    run = services.start_training(domain=domain, dataset_version=version, by=bob, kind="embedding",
                                  base_model=str(tiny_bert), overrides=FAST)
    assert run.config["objective"] == "mnrl" and run.config["epochs"] == 3
    run_job(run.job.pk)
    job = Job.objects.get(pk=run.job.pk)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    model = ModelVersion.objects.get(run=run)
    assert model.kind == "embedding" and model.dataset_hash == version.content_hash
    evaluation = model.metrics["retrieval"]
    assert evaluation["split"] == "test" and evaluation["queries"] == len(QUESTIONS)
    names = [row["name"] for row in evaluation["table"]]
    assert names == ["bm25", "base", "fine-tuned", "hybrid (fine-tuned)"]
    for row in evaluation["table"]:
        assert 0 <= row["hit@1"] <= row["hit@3"] <= row["hit@5"] <= row["hit@10"] <= 1
    assert set(evaluation["distributions"]) == {"base", "fine-tuned"}
    clustering = evaluation["clustering"]["document"]  # two documents, each model's chunks clustered
    assert set(clustering) == {"base", "fine-tuned"}
    for report in clustering.values():
        assert report["labels"] == 2 and 0.5 <= report["purity"] <= 1 and 0 <= report["nmi"] <= 1
    history = TrainingRun.objects.get(pk=run.pk).metrics["history"]
    assert history[-1]["loss"] < history[0]["loss"]

    page = client_as(bob).get(f"/d/{domain.slug}/models/{model.pk}/").content.decode()
    assert 'data-retriever="fine-tuned"' in page and page.count('class="score-plot"') == 2
    assert 'data-clustering="document-fine-tuned"' in page
    # its export is ONNX (float32 and int8), each checked against PyTorch
    assert "Export to ONNX" in page and 'name="gguf_outtype"' not in page
    response = client_as(bob).post(f"/d/{domain.slug}/models/{model.pk}/export/")
    assert response.status_code == 302
    export = ModelExport.objects.get(model_version=model)
    assert export.onnx and export.formats == ["onnx", "onnx-int8"] and export.job.kind == "export"
    run_job(export.job.pk)
    export.refresh_from_db()
    assert export.job.status == Job.Status.SUCCEEDED, export.job.error + export.job.log_tail
    assert export.files["onnx"]["min_cosine"] >= 0.99 and "cosine to PyTorch" in export.job.log_tail
    assert {"onnx", "archive"} <= set(export.files)
    names = zipfile.ZipFile(export.artifact_file("archive")).namelist()
    assert "onnx/model.onnx" in names and "onnx/vsm_onnx.json" in names
    download = client_as(bob).get(f"/d/{domain.slug}/exports/{export.pk}/download/?file=onnx")
    import hashlib

    assert download.status_code == 200
    assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == export.files["onnx"]["sha256"]
    page = client_as(bob).get(f"/d/{domain.slug}/models/{model.pk}/").content.decode()
    assert 'data-artifact="onnx"' in page and "cos ≥" in page

    RetrievalIndex.objects.create(domain=domain, encoder=str(tiny_bert))
    with django_capture_on_commit_callbacks(execute=True):
        model.promote()
    rebuild = Job.objects.get(kind="index")
    assert rebuild.status == Job.Status.QUEUED and sent[-1] == rebuild.pk
    run_job(rebuild.pk)
    index = RetrievalIndex.objects.get(domain=domain)
    assert index.model_version_id == model.pk and index.built_encoder.endswith(model.adapter_path)
    assert retrieval.search(domain=domain, query="住宿标准", k=2)["results"]["dense"]


def test_embedding_runs_refuse_what_cannot_work(domain, bob, version, tmp_path, sent):
    with pytest.raises(ValidationError, match="objective"):
        services.start_training(domain=domain, dataset_version=version, by=bob, kind="embedding",
                                overrides={"objective": "magic"})
    with pytest.raises(ValidationError, match="dataset version"):
        services.start_training(domain=domain, dataset_version=None, by=bob, kind="embedding")
    with pytest.raises(ValidationError, match="does not exist"):
        services.start_training(domain=domain, dataset_version=version, by=bob, kind="embedding",
                                base_model=str(tmp_path / "none"))
    assert not TrainingRun.objects.exists() and sent == []


def test_the_form_settings_map_onto_the_embedding_config(domain, bob, version, sent, client_as):
    run = services.start_training(domain=domain, dataset_version=version, by=bob, kind="embedding",
                                  overrides={"lora_r": 16, "batch_size": 8, "max_length": 128, "strategy": "bitfit"})
    assert run.config["batch_size"] == 8 and run.config["max_seq_length"] == 128 and "lora_r" not in run.config
    assert run.config["strategy"] == "bitfit" and run.config["learning_rate"] == 1e-3  # BitFit's own default
    assert run.base_model == "embedded:all-minilm-l6-v2"
    # The form's untouched LLM settings (lr 2e-4, r 8, …) are not sent: the embedding defaults apply.
    from training_app.forms import TrainingStartForm

    defaults = TrainingStartForm(domain=domain)
    data = {name: field.initial for name, field in defaults.fields.items() if field.initial is not None}
    data.update(kind="embedding", dataset_version=version.pk, objective="cosent", strategy="full")
    form = TrainingStartForm(data, domain=domain)
    assert form.is_valid(), form.errors
    assert form.overrides() == {"objective": "cosent", "strategy": "full"}
    response = client_as(bob).post(f"/d/{domain.slug}/runs/new/", {**data, "objective": "mnrl"})
    assert response.status_code == 302
    latest = TrainingRun.objects.order_by("-pk").first()
    assert latest.kind == "embedding" and latest.config["learning_rate"] == 2e-5 and latest.config["objective"] == "mnrl"


def test_a_tsdae_run_through_the_api_needs_only_the_documents(domain, bob, data_dir, tiny_bert, api_as, sent):  # noqa: F811
    client = api_as(bob)
    url = f"/api/domains/{domain.slug}/runs/"
    refused = client.post(url, {"kind": "embedding", "base_model": str(tiny_bert),
                                "overrides": {"objective": "tsdae"}}, format="json")
    assert refused.status_code == 400 and "none yet" in str(refused.json())  # no chunks to read yet
    make_chunks(domain, texts=ARTICLES)
    created = client.post(url, {"kind": "embedding", "base_model": str(tiny_bert),
                                "overrides": {"objective": "tsdae", "epochs": 1, "batch_size": 2}}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["kind"] == "embedding" and body["dataset_version"] is None and body["job"]["status"] == "queued"
    run_job(body["job"]["id"])
    run = client.get(f"{url}{body['id']}/").json()
    assert run["job"]["status"] == "succeeded", run["job"]["error"]
    model = ModelVersion.objects.get(run_id=body["id"])
    assert model.kind == "embedding" and "retrieval" not in model.metrics  # nothing held out to measure on
    assert (data_dir / model.adapter_path / "modules.json").is_file()
