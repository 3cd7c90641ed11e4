"""The retrieval API: index status and settings, rebuild, hit testing, comparisons; keys and roles."""
from __future__ import annotations

import pytest

from domains.jobs import run_job
from domains.models import ApiKey, Job
from inference_app import services
from inference_app.models import EmbeddingComparison, RetrievalIndex

from .test_distill_jobs import make_chunks
from .test_retrieval_jobs import MANUAL


@pytest.fixture
def built(domain, data_dir, sent):
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    make_chunks(domain)
    make_chunks(domain, texts=MANUAL, filename="manual.md")
    run_job(services.start_index_build(domain=domain).pk)
    return domain


def key(domain, alice, scope):
    from rest_framework.test import APIClient

    _key, secret = ApiKey.issue(domain=domain, name=f"crm-{scope}", scope=scope, created_by=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_a_read_key_searches_and_reads_the_index(built, alice):
    client = key(built, alice, "read")
    index = client.get(f"/api/domains/{built.slug}/retrieval/").json()
    assert index["is_built"] and index["passages"] == 9 and index["dense_enabled"] is False
    assert index["job"]["status"] == "succeeded" and index["fusion"]["dense"] == 0
    found = client.get(f"/api/domains/{built.slug}/retrieval/search/", {"q": "E200 over-voltage", "k": 2,
                                                                        "methods": "bm25"})
    assert found.status_code == 200
    body = found.json()
    assert list(body["results"]) == ["bm25"] and len(body["results"]["bm25"]) == 2
    top = body["results"]["bm25"][0]
    assert top["text"].startswith("E200") and top["document"] == "manual.md" and top["rank"] == 1
    assert set(top) >= {"score", "chunk_id", "document_id", "page", "heading", "current"}
    # a read key cannot rebuild or change settings
    assert client.post(f"/api/domains/{built.slug}/retrieval/build/").status_code == 403
    assert client.patch(f"/api/domains/{built.slug}/retrieval/", {"dense_enabled": True},
                        format="json").status_code == 403


def test_bad_search_parameters_are_400_under_their_name(built, api_as, vera):
    client = api_as(vera)
    url = f"/api/domains/{built.slug}/retrieval/search/"
    assert "q" in client.get(url).json()
    assert "k" in client.get(url, {"q": "x", "k": 500}).json()
    assert "methods" in client.get(url, {"q": "x", "methods": "bm25,magic"}).json()


def test_a_read_write_key_rebuilds_and_changes_settings(built, alice, sent, tmp_path):
    client = key(built, alice, "read_write")
    response = client.post(f"/api/domains/{built.slug}/retrieval/build/")
    assert response.status_code == 202 and response.json()["kind"] == "index" and response.json()["status"] == "queued"
    again = client.post(f"/api/domains/{built.slug}/retrieval/build/")
    assert again.json()["id"] == response.json()["id"]  # the queued build serves
    assert Job.objects.filter(kind="index", status="queued").count() == 1
    bad = client.patch(f"/api/domains/{built.slug}/retrieval/", {"encoder": str(tmp_path / "none")}, format="json")
    assert bad.status_code == 400 and "encoder" in bad.json()
    ok = client.patch(f"/api/domains/{built.slug}/retrieval/", {"dense_enabled": True}, format="json")
    assert ok.status_code == 200 and ok.json()["dense_enabled"] is True and ok.json()["stale"] is True


def test_comparisons_start_list_and_stay_in_their_domain(built, other_domain, alice, bob, api_as, sent):
    from datasets_app import services as dataset_services
    from datasets_app.models import QADataset
    from domains.models import Chunk

    client = api_as(bob)
    url = f"/api/domains/{built.slug}/embedding-comparisons/"
    refused = client.post(url, {"candidates": ["embedded:all-minilm-l6-v2"]}, format="json")
    assert refused.status_code == 400 and "no questions" in str(refused.json())
    chunk = Chunk.objects.for_domain(built).first()
    dataset_services.add_pair(dataset=QADataset.default_for(built), by=bob, question="协议?", answer="3000元",
                              chunk=chunk, approve=True)
    created = client.post(url, {"candidates": ["embedded:all-minilm-l6-v2"]}, format="json")
    assert created.status_code == 201 and created.json()["job"]["kind"] == "embedding_compare"
    assert [c["id"] for c in client.get(url).json()["results"]] == [created.json()["id"]]
    theirs = EmbeddingComparison.objects.create(domain=other_domain, candidates=["x"])
    assert client.get(f"{url}{theirs.pk}/").status_code == 404
    assert Job.objects.filter(domain=other_domain).count() == 0
