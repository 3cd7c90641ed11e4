"""The whole pipeline on tiny models: the finance sample (one of its documents as a scan) through every
stage to a served chat, from the management command; a stage that fails and the resume that continues
it; the API call; option and stage validation."""
from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from datasets_app.models import DatasetVersion, QAPair
from domains import pipeline
from domains.engine.samples import plain_lines, render_scanned_pdf
from domains.jobs import run_job
from domains.models import Document, Domain, Job
from inference_app.models import Deployment
from training_app.models import EvaluationRun, ModelExport, ModelVersion
from tests.conftest import PASSWORD
from tests.test_browser import page  # noqa: F401 - the fixture is used by name
from tests.training_engine.tiny_bert import tiny_bert  # noqa: F401 - the fixture is used by name
from tests.training_engine.tiny_gemma import gemma_tokenizer_dir, tiny_gemma_gguf  # noqa: F401

FAST_SFT = {"epochs": 1, "learning_rate": 1e-3, "grad_accum": 1, "batch_size": 8, "max_length": 256}
FAST_EMBEDDING = {"epochs": 1, "batch_size": 16}


def _command(*args) -> str:
    out = StringIO()
    call_command("run_pipeline", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _fast_args(tiny_gemma_gguf, tiny_bert) -> list[str]:  # noqa: F811
    return ["--owner", "alice", "--base-model", str(tiny_gemma_gguf), "--embedding-model", str(tiny_bert),
            "--option", f"sft={json.dumps(FAST_SFT)}", "--option", f"embedding={json.dumps(FAST_EMBEDDING)}",
            "--option", 'evaluation={"max_new_tokens": 8, "probe": false, "k": 1}', "--option", "per_chunk=1",
            "--scan-pages", "1", "--chunk-chars", "200", "--no-progress"]


GUIDE = Path(__file__).resolve().parent.parent / "var" / "screenshots" / "guide"


@pytest.fixture
def orm_beside_browser(monkeypatch):
    """Playwright's loop is current in this thread while the test uses the ORM (see test_browser_chat.py)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_whole_pipeline_on_tiny_models_then_a_failed_stage_resumes(
        alice, data_dir, tiny_gemma_gguf, tiny_bert, monkeypatch, orm_beside_browser, live_server,
        page):  # noqa: F811
    from domains.jobs import _REGISTRY, JobError, JobKind

    # The export fails the first time (as a full disk or a converter crash would).
    original = _REGISTRY["export"]

    def broken(ctx):
        raise JobError("the converter crashed (injected)")

    monkeypatch.setitem(_REGISTRY, "export", JobKind("export", original.label, broken))
    with pytest.raises(CommandError, match="export"):
        _command("demo", "--sample", "finance", *_fast_args(tiny_gemma_gguf, tiny_bert))
    domain = Domain.objects.get(slug="demo")
    first = pipeline.latest_pipeline(domain)
    assert first.status == Job.Status.FAILED and "resume" in first.error
    stages = first.result["stages"]
    done = [name for name in pipeline.STAGE_NAMES if stages.get(name, {}).get("status") == "succeeded"]
    assert done == pipeline.STAGE_NAMES[:pipeline.STAGE_NAMES.index("export")]
    assert stages["export"]["status"] == "failed" and "injected" in stages["export"]["error"]
    trained = set(Job.objects.filter(kind="train").values_list("pk", flat=True))
    assert len(trained) == 2  # the embedding model and the LoRA SFT
    sft_run = ModelVersion.objects.get(domain=domain, kind="sft").run
    assert sft_run.config["grounded"] is True and sft_run.config["epochs"] == 1  # defaults + the given settings

    # What the stages made, before the resume.
    documents = {d.filename: d for d in Document.objects.for_domain(domain)}
    assert set(documents) == {"reimbursement_policy.md", "travel_rules.pdf"}
    scan = documents["travel_rules.pdf"]
    assert scan.status == "ready" and scan.ocr_pages == [1] and scan.chunk_count >= 1  # read by OCR
    assert domain.demo_mode is True
    demo_pairs = QAPair.objects.filter(domain=domain, held_out=False, status="approved")
    assert demo_pairs.exists() and not QAPair.objects.filter(domain=domain, status="pending").exists()
    assert all(e.note == pipeline.DEMO_NOTE for p in demo_pairs[:5] for e in p.events.filter(action="approve"))
    version = DatasetVersion.objects.get(domain=domain)
    assert version.counts["qa"]["test"] == 24  # the sample's held-out questions, never trained on
    held = QAPair.objects.filter(domain=domain, held_out=True, question__contains="3000元").first()
    assert held is not None and held.chunk is not None and "第二十四条" in held.chunk.text  # linked to its article
    evaluation = EvaluationRun.objects.get(domain=domain)
    assert set(evaluation.results) == {"base", "model", "base_rag", "model_rag", "extractive"}

    # Resume: only the failed stage and the ones after it run; its own job is started again.
    monkeypatch.setitem(_REGISTRY, "export", original)
    out = _command("demo", "--resume", "--no-progress")
    job = pipeline.latest_pipeline(domain)
    assert job.pk == first.pk and job.status == Job.Status.SUCCEEDED
    assert set(Job.objects.filter(kind="train").values_list("pk", flat=True)) == trained  # nothing trained again
    assert job.result["stages"]["export"]["job"] == stages["export"]["job"]  # the same export job, resumed
    assert EvaluationRun.objects.filter(domain=domain).count() == 1
    export = ModelExport.objects.get(domain=domain)
    assert export.job.status == Job.Status.SUCCEEDED and export.artifact_file("gguf").suffix == ".gguf"

    # The terminal report: a line per stage, the evaluation table, the chat with a cited answer.
    assert "✓ [13/14] Export a GGUF" in out and "✓ [14/14] Serve the chat" in out, out
    table = out[out.index("Evaluation #"):]
    for configuration in ("base", "model", "base_rag", "model_rag", "extractive"):
        assert f"\n{configuration}" in table
    assert "accuracy" in table and "key facts" in table and "hallucinated" in table
    served = job.result["stages"]["serve"]
    assert served["url"] == "/d/demo/chat/" and served["question"] and served["citations"]
    assert "Chat: /d/demo/chat/" in out and "[1] " in out
    from domains.models import ApiKey

    _key, secret = ApiKey.issue(domain=domain, name="crm", scope="read", created_by=alice)
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    asked = api.post("/api/domains/demo/ask/", {"question": served["question"]}, format="json").json()
    assert asked["demo"] is True and asked["citations"]  # the API says the answers rest on unreviewed pairs
    promote = job.result["stages"]["promote"]
    assert promote["best"] in evaluation.results
    deployment = Deployment.objects.get(domain=domain)
    assert deployment.mode == promote["mode"]
    llm = ModelVersion.objects.get(domain=domain, kind="sft")
    assert llm.is_active == promote["promoted"]
    # Every stage was a job of its own, all finished.
    stage_jobs = Job.objects.filter(pk__in=[r["job"] for r in job.result["stages"].values()])
    assert stage_jobs.count() == len(pipeline.STAGE_NAMES)
    assert set(stage_jobs.values_list("status", flat=True)) == {"succeeded"}

    _guide_tour(live_server.url, page, evaluation.pk, served["question"])


def _guide_tour(url: str, page, evaluation_id: int, question: str) -> None:  # noqa: F811
    """The expert's path through what the pipeline built, in Chromium; the user guide's screenshots."""
    GUIDE.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/login/?next=/d/demo/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{url}/d/demo/")
    assert "Demo mode" in page.locator(".demo-mode").inner_text()
    page.screenshot(path=str(GUIDE / "1-dashboard.png"), full_page=True)
    page.goto(f"{url}/d/demo/documents/")
    assert page.locator("text=travel_rules.pdf").count() >= 1
    page.screenshot(path=str(GUIDE / "2-documents.png"), full_page=True)
    page.goto(f"{url}/d/demo/review/?status=approved")
    page.screenshot(path=str(GUIDE / "3-review.png"), full_page=False)
    page.goto(f"{url}/d/demo/evaluations/{evaluation_id}/")
    assert page.locator("text=extractive").count() >= 1
    page.screenshot(path=str(GUIDE / "4-evaluation.png"), full_page=False)
    page.goto(f"{url}/d/demo/jobs/")
    page.screenshot(path=str(GUIDE / "5-jobs.png"), full_page=False)
    page.goto(f"{url}/d/demo/chat/")
    page.fill("#id_question", question)
    page.press("#id_question", "Enter")
    answer = page.locator('article[data-role="assistant"][data-message]').first
    answer.wait_for(timeout=30_000)
    citation = answer.locator(".citations li").first
    assert "reimbursement_policy.md" in citation.inner_text()
    page.screenshot(path=str(GUIDE / "6-chat.png"), full_page=True)


def test_the_demo_banner_shows_on_every_domain_page(domain, client_as, alice):
    page = client_as(alice).get("/d/finance/").content.decode()
    assert "demo-mode" not in page
    Domain.objects.filter(pk=domain.pk).update(demo_mode=True)
    for url in ("/d/finance/", "/d/finance/review/", "/d/finance/chat/"):
        assert 'class="demo-mode"' in client_as(alice).get(url).content.decode(), url
    from django.utils import translation

    with translation.override("zh-hans"):  # the banner and the stages speak Chinese too
        assert translation.gettext("Demo mode") == "演示模式"
        assert pipeline.stage_label("sft") == "基础大模型的 LoRA 监督微调"


def test_the_api_starts_resumes_and_reports_the_pipeline(domain, alice, bob, vera, api_as, sent):
    api = api_as(bob)
    assert api.get("/api/domains/finance/pipeline/").json() == {"job": None, "stages": pipeline.STAGE_NAMES}
    assert api.post("/api/domains/finance/pipeline/", {"resume": True}, format="json").status_code == 400
    response = api.post("/api/domains/finance/pipeline/",
                        {"stages": ["freeze", "ingest"], "options": {"demo": True, "per_chunk": 2}}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(pk=body["job"]["id"])
    assert job.kind == "pipeline" and job.params["stages"] == ["ingest", "freeze"]  # pipeline order
    assert job.params["options"]["demo"] is True and job.params["options"]["per_chunk"] == 2
    assert job.status == Job.Status.QUEUED and job.created_by == bob
    promoting = api.post("/api/domains/finance/pipeline/", {}, format="json")  # all stages, promote included
    assert promoting.status_code == 403 and "owner" in promoting.json()["detail"]
    again = api_as(alice).post("/api/domains/finance/pipeline/", {}, format="json")
    assert again.status_code == 400 and "already running" in json.dumps(again.json())
    assert api_as(vera).post("/api/domains/finance/pipeline/", {}, format="json").status_code == 403
    Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED)
    bad = api.post("/api/domains/finance/pipeline/", {"stages": ["train_everything"]}, format="json")
    assert bad.status_code == 400 and "train_everything" in json.dumps(bad.json())
    bad = api.post("/api/domains/finance/pipeline/", {"options": {"per_chunk": "lots"}}, format="json")
    assert bad.status_code == 400 and "per_chunk" in json.dumps(bad.json())
    resumed = api.post("/api/domains/finance/pipeline/", {"resume": True}, format="json")
    assert resumed.status_code == 202 and resumed.json()["job"]["id"] == job.pk
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_a_pipeline_with_nothing_to_read_fails_with_what_to_do(domain, alice, data_dir):
    job = pipeline.start_pipeline(domain=domain, by=alice, stages=["ingest", "distill"])
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "ingest" in job.error and "no documents" in job.error.lower()
    assert job.result["stages"]["ingest"]["status"] == "failed"
    assert "distill" not in job.result["stages"]  # nothing after the failed stage ran


def test_cancelling_the_pipeline_cancels_the_stage_it_runs(domain, alice, sent):
    from domains.jobs import cancel_job

    parent = pipeline.start_pipeline(domain=domain, by=alice, stages=["ingest"])
    child = pipeline._step(pipeline.PipelineRun(domain, alice, pipeline.clean_options({}), {}, parent.pk), "ingest")
    Job.objects.filter(pk=parent.pk).update(status=Job.Status.RUNNING, result={"child_job": child.pk})
    cancel_job(Job.objects.get(pk=parent.pk))
    assert Job.objects.get(pk=child.pk).status == Job.Status.CANCELLED


def test_the_command_refuses_what_it_cannot_run(db, alice):
    with pytest.raises(CommandError, match="no domain 'nowhere'"):
        _command("nowhere", "--owner", "alice")
    with pytest.raises(CommandError, match="no user 'zed'"):
        _command("nowhere", "--owner", "zed")
    Domain.objects.create(slug="empty", name="Empty")
    with pytest.raises(CommandError, match="Unknown stage"):
        _command("empty", "--owner", "alice", "--stages", "ingest,fly")
    with pytest.raises(CommandError, match="no pipeline to resume"):
        _command("empty", "--owner", "alice", "--resume")


def test_options_are_checked_and_stages_kept_in_order():
    assert pipeline.clean_stages("serve, ingest") == ["ingest", "serve"]
    assert pipeline.clean_stages(None) == pipeline.STAGE_NAMES
    assert pipeline.clean_options({"sft": {"epochs": 2}})["sft"] == {"grounded": True, "max_length": 1024, "epochs": 2}
    for bad in ({"color": "red"}, {"sample": "pigs"}, {"test_fraction": 0.9}, {"sft": 3}, {"gguf_outtype": "q2"},
                {"demo": "false"}, {"per_chunk": 2.5}):
        with pytest.raises(Exception) as info:
            pipeline.clean_options(bad)
        assert next(iter(bad)) in str(info.value)


def test_the_best_configuration_is_measured_not_assumed():
    rows = {"base": {"accuracy": 0.1}, "model_rag": {"accuracy": 0.5, "key_fact_recall": 0.4},
            "extractive": {"accuracy": 0.5, "key_fact_recall": 0.6}}
    assert pipeline.best_configuration(rows) == "extractive"  # the tie broken by key facts
    rows["extractive"]["key_fact_recall"] = 0.4
    assert pipeline.best_configuration(rows) == "model_rag"  # a full tie: the grounded fine-tuned model
    assert pipeline.best_configuration({}) is None


def test_a_markdown_sample_becomes_an_image_only_pdf(tmp_path):
    import pymupdf

    text = "# 标题\n\n第一条 发票金额3000元以上需要协议。\n\n| 级别 | 标准 |\n|---|---|\n| 教授 | 600元 |\n"
    assert plain_lines(text) == ["标题", "", "第一条 发票金额3000元以上需要协议。", "", "级别    标准", "教授    600元"]
    pages = render_scanned_pdf(text * 20, tmp_path / "scan.pdf", lines_per_page=30)
    with pymupdf.open(tmp_path / "scan.pdf") as doc:
        assert doc.page_count == pages == 4
        assert all(not page.get_text().strip() and page.get_images() for page in doc)  # no text layer


def test_the_dashboard_runs_the_pipeline_and_shows_its_stages(domain, alice, bob, vera, client_as):
    assert client_as(vera).post("/d/finance/pipeline/").status_code == 403
    page = client_as(vera).get("/d/finance/").content.decode()
    assert 'id="pipeline-run"' in page and 'id="pipeline-form"' not in page  # viewers see, do not start
    response = client_as(bob).post("/d/finance/pipeline/", {"demo": "1"})
    assert response.status_code == 302 and response["Location"] == "/d/finance/"
    job = pipeline.latest_pipeline(domain)
    assert job.kind == "pipeline" and job.params["options"]["demo"] is True and job.created_by == bob
    assert "promote" not in job.params["stages"] and "sft" in job.params["stages"]  # an expert's pipeline
    twice = client_as(bob).post("/d/finance/pipeline/", follow=True).content.decode()
    assert "already running" in twice
    record = {"job": job.pk, "kind": "pipeline_step", "status": "failed", "error": "No document could be read"}
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, result={"stages": {"ingest": record}})
    page = client_as(bob).get("/d/finance/").content.decode()
    assert 'data-stage="ingest" data-status="failed"' in page and "No document could be read" in page
    assert 'name="resume"' in page
    client_as(bob).post("/d/finance/pipeline/", {"resume": "1"})
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.result["stages"]["ingest"]["status"] == "waiting"


class _Terminal(StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db(transaction=True)
def test_a_terminal_gets_a_progress_bar_per_stage(alice, data_dir, monkeypatch):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from domains.services import create_domain, upload_documents

    domain = create_domain(owner=alice, slug="bars", name="Bars", language="zh")
    policy = (pipeline.SAMPLES["finance"].path / "reimbursement_policy.md").read_bytes()
    upload_documents(domain=domain, uploaded_by=alice, files=[SimpleUploadedFile("policy.md", policy)])
    original = pipeline.STEPS["ingest"]

    def slow_ingest(ctx, run):  # long enough for the terminal to draw the stage's bar, whatever the load
        for done in range(4):
            ctx.progress(done, 4, message="reading")
            time.sleep(0.6)
        return original(ctx, run)

    monkeypatch.setitem(pipeline.STEPS, "ingest", slow_ingest)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    out = StringIO()
    call_command("run_pipeline", "bars", "--stages", "ingest,heldout", stdout=out, stderr=StringIO())
    assert "✓ [1/2] Read the documents (OCR for scans)" in out.getvalue()
    assert "✓ [2/2] Held-out test questions" in out.getvalue()
    assert "[1/2] Read the documents" in terminal.getvalue()  # the bar tqdm drew while the stage ran
