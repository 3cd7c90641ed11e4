"""The pipeline started through the API and run by a real qcluster worker (one process): the pipeline
job runs each stage's job itself when the only worker is busy with it, and the stage messages that
reach the worker later find their jobs taken."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import DatasetVersion
from domains import pipeline
from domains.models import Document, Job
from domains.services import upload_documents
from tests.test_worker import _job, _wait, cluster  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_worker_runs_the_pipeline_from_the_api_call(data_dir, cluster, domain, bob, api_as):  # noqa: F811
    _proc, log = cluster
    policy = (pipeline.SAMPLES["finance"].path / "reimbursement_policy.md").read_bytes()
    upload_documents(domain=domain, uploaded_by=bob, files=[SimpleUploadedFile("policy.md", policy)])
    response = api_as(bob).post("/api/domains/finance/pipeline/", {
        "stages": ["ingest", "heldout", "distill", "approve", "retrieval_data", "freeze"],
        "options": {"demo": True, "sample": "finance"}}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["job"]["id"]
    job = _wait(lambda: (j := _job(job_id)).is_finished and j, 180, log, "the pipeline to finish")
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    stages = job.result["stages"]
    assert set(stages) == {"ingest", "heldout", "distill", "approve", "retrieval_data", "freeze"}  # jsonb: no order
    assert {Job.objects.get(pk=s["job"]).status for s in stages.values()} == {"succeeded"}
    assert Document.objects.get(domain=domain).status == "ready"
    version = DatasetVersion.objects.get(pk=stages["freeze"]["dataset_version"])
    # The policy's held-out questions (the travel rules' ones have no document here, so no chunk).
    assert version.counts["qa"]["test"] == 24 and version.counts["qa"]["train"] > 10
    body = api_as(bob).get("/api/domains/finance/pipeline/").json()
    assert body["job"]["status"] == "succeeded" and [s["name"] for s in body["stages"]] == [
        "ingest", "heldout", "distill", "approve", "retrieval_data", "freeze"]  # in pipeline order
