"""The retrieval page: index card and its poll, build and settings forms, hit testing, comparisons."""
from __future__ import annotations

import pytest

from domains.jobs import run_job
from domains.models import Job
from inference_app import services
from inference_app.models import EmbeddingComparison, RetrievalIndex

from .test_distill_jobs import make_chunks
from .test_retrieval_jobs import MANUAL


@pytest.fixture
def built(domain, data_dir, sent):
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    make_chunks(domain)
    make_chunks(domain, texts=MANUAL, filename="manual.md")
    job = services.start_index_build(domain=domain)
    run_job(job.pk)
    return domain


def test_the_page_shows_the_index_and_hit_testing_columns(built, client_as, vera):
    client = client_as(vera)
    page = client.get(f"/d/{built.slug}/retrieval/")
    html = page.content.decode()
    assert page.status_code == 200 and 'data-built="1"' in html and 'data-passages="9"' in html
    assert "BM25 only" in html
    assert 'action="/d/finance/retrieval/build/"' not in html  # viewers search but do not build
    hits = client.get(f"/d/{built.slug}/retrieval/", {"q": "E100.1", "k": 2}).content.decode()
    assert hits.count('class="hit"') == 4  # two per column: BM25 and hybrid (dense is off)
    assert 'data-method="bm25"' in hits and "E100.1 over-current during acceleration" in hits
    assert f'/d/{built.slug}/documents/' in hits  # each hit links to its document


def test_htmx_hit_testing_returns_only_the_results(built, client_as, vera):
    client = client_as(vera)
    response = client.get(f"/d/{built.slug}/retrieval/", {"q": "住宿费", "hits": "1"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="hits"') and "<nav" not in html
    assert "500元" in html


def test_an_empty_query_and_a_missing_index_are_explained(domain, data_dir, client_as, bob, sent):
    client = client_as(bob)
    html = client.get(f"/d/{domain.slug}/retrieval/", {"q": "报销"}).content.decode()
    assert "build it first" in html and "No index yet" in html


def test_experts_build_and_the_card_polls_until_done(domain, data_dir, client_as, bob, sent):
    make_chunks(domain)
    client = client_as(bob)
    response = client.post(f"/d/{domain.slug}/retrieval/build/")
    assert response.status_code == 302
    job = Job.objects.get(kind="index")
    card = client.get(f"/d/{domain.slug}/retrieval/", {"index": "1"}, HTTP_HX_REQUEST="true")
    assert card.status_code == 200 and 'hx-trigger="every 2s"' in card.content.decode()
    RetrievalIndex.objects.filter(domain=domain).update(dense_enabled=False)
    run_job(job.pk)
    done = client.get(f"/d/{domain.slug}/retrieval/", {"index": "1"}, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and 'data-built="1"' in done.content.decode()


def test_settings_change_rebuilds_and_a_bad_model_is_refused_on_the_form(built, client_as, bob, tmp_path, sent):
    client = client_as(bob)
    jobs = Job.objects.filter(kind="index")
    bad = client.post(f"/d/{built.slug}/retrieval/settings/", {"encoder": str(tmp_path / "nope"),
                                                               "dense_enabled": "on"})
    assert bad.status_code == 400 and "is not a folder" in bad.content.decode() and jobs.count() == 1
    ok = client.post(f"/d/{built.slug}/retrieval/settings/", {"encoder": "embedded:all-minilm-l6-v2",
                                                              "dense_enabled": "on"})
    assert ok.status_code == 302 and jobs.count() == 2
    index = RetrievalIndex.objects.get(domain=built)
    assert index.dense_enabled and index.stale


def test_viewers_cannot_build_change_or_compare(built, client_as, vera, sent):
    client = client_as(vera)
    for url in ("build/", "settings/", "compare/"):
        assert client.post(f"/d/{built.slug}/retrieval/{url}", {"candidates": "x"}).status_code == 403
    assert Job.objects.count() == 1 and not EmbeddingComparison.objects.exists()  # only the fixture's build


def test_a_comparison_row_is_polled_and_shows_its_table(built, client_as, bob, alice):
    comparison = EmbeddingComparison.objects.create(domain=built, candidates=["a", "b"], created_by=alice)
    job = Job.objects.create(domain=built, kind="embedding_compare", status=Job.Status.RUNNING)
    EmbeddingComparison.objects.filter(pk=comparison.pk).update(job=job)
    client = client_as(bob)
    url = f"/d/{built.slug}/comparisons/{comparison.pk}/"
    assert 'hx-trigger="every 2s"' in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    EmbeddingComparison.objects.filter(pk=comparison.pk).update(results=[
        {"name": "a", "hit@1": 0.5, "hit@3": 0.7, "hit@5": 0.8, "hit@10": 0.9, "mrr@10": 0.6, "ndcg@10": 0.65,
         "seconds": 1.2},
        {"name": "b", "error": "b is not on this machine"}], queries=4, passages=9)
    done = client.get(url, HTTP_HX_REQUEST="true")
    html = done.content.decode()
    assert done.status_code == 286 and 'style="width:50.0%"' in html and "b is not on this machine" in html
    assert client.get(url).status_code == 200


def test_the_comparison_form_starts_a_job_with_one_model_per_line(built, client_as, bob, sent):
    from datasets_app import services as dataset_services
    from datasets_app.models import QADataset
    from domains.models import Chunk

    chunk = Chunk.objects.for_domain(built).first()
    dataset_services.add_pair(dataset=QADataset.default_for(built), by=bob, question="协议?", answer="3000元",
                              chunk=chunk, approve=True)
    response = client_as(bob).post(f"/d/{built.slug}/retrieval/compare/",
                                   {"candidates": "embedded:all-minilm-l6-v2\n\n embedded:all-minilm-l6-v2 "})
    assert response.status_code == 302 and response["Location"].endswith("#comparisons")
    comparison = EmbeddingComparison.objects.get(domain=built)
    assert comparison.candidates == ["embedded:all-minilm-l6-v2"] and comparison.job.kind == "embedding_compare"
    assert comparison.job.status == Job.Status.QUEUED
