"""The whole pipeline on the real embedded defaults (Gemma 3 270M from its PyPI GGUF, all-MiniLM-L6-v2,
PP-OCRv4), offline, from the management command, as the README's demo runs it, with fewer epochs,
fewer pages of the scan and shorter answers so that CI stays within its budget (the demo itself is
not reduced)."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from domains import pipeline
from domains.models import Domain, Job
from inference_app.models import Deployment
from training_app.models import EvaluationRun, ModelExport, ModelVersion
from tests.training_engine.conftest import embedded_gemma  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_demo_pipeline_on_the_embedded_defaults(alice, data_dir, embedded_gemma, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    out = StringIO()
    call_command("run_pipeline", "demo", "--sample", "finance", "--owner", "alice",
                 "--base-model", str(embedded_gemma),  # the imported embedded Gemma (imported once per session)
                 "--scan-pages", "2", "--option", f"sft={json.dumps({'epochs': 1, 'max_length': 512})}",
                 "--option", 'evaluation={"max_new_tokens": 32, "probe": false}',
                 "--no-progress", stdout=out, stderr=StringIO())
    text = out.getvalue()
    domain = Domain.objects.get(slug="demo")
    job = pipeline.latest_pipeline(domain)
    assert job.status == Job.Status.SUCCEEDED, text
    stages = job.result["stages"]
    assert [n for n in pipeline.STAGE_NAMES if stages[n]["status"] == "succeeded"] == pipeline.STAGE_NAMES, text
    assert stages["ingest"]["ocr_pages"] == 2  # the travel rules were read from the scan

    # Every configuration measured on the 24 held-out questions; retrieval finds the right article.
    evaluation = EvaluationRun.objects.get(domain=domain)
    assert set(evaluation.results) == {"base", "model", "base_rag", "model_rag", "extractive"}
    assert all(r["items"] == 24 for r in evaluation.results.values())
    assert evaluation.results["extractive"]["context_recall"] >= 0.7
    # The served configuration is the one that measured best.
    best = stages["promote"]["best"]
    assert best == pipeline.best_configuration(evaluation.results)
    assert Deployment.objects.get(domain=domain).mode == stages["promote"]["mode"]
    llm = ModelVersion.objects.get(domain=domain, kind="sft")
    assert llm.is_active == (stages["promote"]["promoted"] is True)

    # A GGUF export of the fine-tuned model, and a chat answer with a citation of the policy.
    export = ModelExport.objects.get(domain=domain)
    assert export.artifact_file("gguf").stat().st_size > 100_000_000
    served = stages["serve"]
    assert served["citations"] and served["citations"][0]["document"] == "reimbursement_policy.md"
    assert "Evaluation #" in text and "Chat: /d/demo/chat/" in text
