"""The index job and hit testing in-process: build, search, fusion choice, refresh when documents change."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from datasets_app import services as dataset_services
from datasets_app.models import QADataset
from domains.jobs import run_job
from domains.models import Chunk, Job
from domains.signals import chunks_added, chunks_removed
from inference_app import services
from inference_app.models import EmbeddingComparison, RetrievalIndex

from .test_distill_jobs import ARTICLES, make_chunks
from .training_engine.tiny_bert import tiny_bert  # noqa: F401 - the fixture is used by name

MANUAL = [
    ("Fault codes", "E100 over-current: the output current exceeded the limit. Check the motor cable for a short."),
    ("Fault codes", "E100.1 over-current during acceleration: lengthen the acceleration time (parameter P0.12)."),
    ("Fault codes", "E200 over-voltage: the DC bus voltage is too high. Add a braking resistor."),
    ("Maintenance", "Clean the cooling fan every six months and check that the heat sink is free of dust."),
]


def build(domain, user=None) -> Job:
    job = services.start_index_build(domain=domain, by=user)
    run_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.fixture
def bm25_only(domain, data_dir):
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    make_chunks(domain)
    make_chunks(domain, texts=MANUAL, filename="manual.md")
    return domain


def test_a_bm25_index_builds_and_finds_the_article_and_the_fault_code(bm25_only, bob, sent):
    job = build(bm25_only, bob)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    index = RetrievalIndex.objects.get(domain=bm25_only)
    assert index.is_built and index.passages == len(ARTICLES) + len(MANUAL) and not index.stale
    assert index.built_encoder == "" and index.fusion["dense"] == 0
    assert (index.path / "manifest.json").is_file()

    found = services.search(domain=bm25_only, query="什么支出必须签订合同？", k=3)
    top = found["results"]["bm25"][0]
    assert "10000元" in top["text"] and top["document"] == "报销管理办法.pdf" and top["rank"] == 1
    assert found["results"]["dense"] == []  # dense is off for this domain
    assert [h["chunk_id"] for h in found["results"]["hybrid"]] == [h["chunk_id"] for h in found["results"]["bm25"]]

    code = services.search(domain=bm25_only, query="E100.1", k=2)["results"]["bm25"]
    assert code[0]["text"].startswith("E100.1")
    plain = services.search(domain=bm25_only, query="E100 over-current", k=2)["results"]["bm25"]
    assert {h["text"][:6] for h in plain} <= {"E100 o", "E100.1"}


def test_search_refuses_bad_input_with_the_field(bm25_only, sent):
    with pytest.raises(ValidationError, match="build it first"):
        services.search(domain=bm25_only, query="报销")
    build(bm25_only)
    for kwargs, field in (({"query": "  "}, "q"), ({"query": "x" * 3000}, "q"), ({"query": "x", "k": 0}, "k"),
                          ({"query": "x", "methods": ["magic"]}, "methods")):
        with pytest.raises(ValidationError) as err:
            services.search(domain=bm25_only, **kwargs)
        assert field in err.value.message_dict


def test_an_empty_domain_fails_the_build_with_a_sentence(domain, data_dir, sent):
    job = build(domain)
    assert job.status == Job.Status.FAILED and "no document chunks" in job.error
    assert not RetrievalIndex.objects.get(domain=domain).is_built


def test_a_second_build_request_reuses_the_queued_job(bm25_only, sent):
    first = services.start_index_build(domain=bm25_only)
    assert services.start_index_build(domain=bm25_only).pk == first.pk
    assert Job.objects.filter(kind="index").count() == 1


def test_changed_documents_mark_a_built_index_stale_and_queue_a_rebuild(bm25_only, django_capture_on_commit_callbacks,
                                                                        sent):
    document = Chunk.objects.for_domain(bm25_only).first().document
    with django_capture_on_commit_callbacks(execute=True):
        chunks_added.send(sender=type(document), document=document, chunk_ids=[])
    assert not Job.objects.filter(kind="index").exists()  # never built: nothing queued, only marked
    assert RetrievalIndex.objects.get(domain=bm25_only).stale
    build(bm25_only)
    with django_capture_on_commit_callbacks(execute=True):
        chunks_removed.send(sender=type(document), document=document, chunk_ids=[1])
    index = RetrievalIndex.objects.get(domain=bm25_only)
    queued = Job.objects.filter(kind="index", status=Job.Status.QUEUED)
    assert index.stale and queued.count() == 1 and sent == [queued.get().pk]


def test_rebuilding_after_a_document_is_deleted_drops_its_chunks(bm25_only, sent):
    build(bm25_only)
    from domains.services import delete_document

    manual = Chunk.objects.for_domain(bm25_only).filter(document__filename="manual.md").first().document
    delete_document(document=manual)
    assert build(bm25_only).status == Job.Status.SUCCEEDED
    hits = services.search(domain=bm25_only, query="E100.1 over-current", k=5)["results"]["bm25"]
    assert all(h["document"] != "manual.md" for h in hits)
    assert RetrievalIndex.objects.get(domain=bm25_only).passages == len(ARTICLES)


def test_other_domains_indexes_stay_apart(bm25_only, other_domain, sent):
    make_chunks(other_domain, texts=[("x", "E100.1 belongs to the other domain only, with its own words.")],
                filename="other.md")
    RetrievalIndex.objects.create(domain=other_domain, dense_enabled=False)
    build(bm25_only), build(other_domain)
    mine = services.search(domain=bm25_only, query="other domain own words", k=10)["results"]["bm25"]
    theirs = services.search(domain=other_domain, query="other domain own words", k=10)["results"]["bm25"]
    assert all(h["document"] != "other.md" for h in mine) and theirs[0]["document"] == "other.md"


# With a dense model (a tiny BERT built locally) ---------------------------------------------


@pytest.fixture
def dense_domain(domain, data_dir, bob, tiny_bert):  # noqa: F811
    RetrievalIndex.objects.create(domain=domain, encoder=str(tiny_bert))
    _doc, chunks = make_chunks(domain)
    dataset = QADataset.default_for(domain)
    for chunk, question in zip(chunks, ["多少金额需要签订协议？", "什么情况必须签订合同？", "出差回来多久内报销？",
                                        "住宿费标准是多少？", "本办法由谁解释？"]):
        dataset_services.add_pair(dataset=dataset, by=bob, question=question, answer=chunk.text[:20], approve=True,
                                  chunk=chunk)
    return domain


def test_a_dense_index_chooses_fusion_weights_no_worse_than_bm25(dense_domain, sent):
    job = build(dense_domain)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    index = RetrievalIndex.objects.get(domain=dense_domain)
    assert index.built_encoder and index.dim and index.fusion_queries == 5
    rows = {row["name"]: row for row in index.fusion_table}
    chosen = rows[index.fusion["chosen"]]
    assert chosen["mrr@10"] >= rows["bm25"]["mrr@10"]  # hybrid never ranks worse than BM25 alone
    found = services.search(domain=dense_domain, query="住宿费标准", k=3)
    assert len(found["results"]["dense"]) == 3 and found["encoder"] == index.built_encoder
    assert all(isinstance(h["score"], float) for h in found["results"]["dense"])


def test_a_comparison_scores_each_candidate_and_names_the_broken_one(dense_domain, bob, tiny_bert, tmp_path,  # noqa: F811
                                                                     sent):
    with pytest.raises(ValidationError, match="not a folder"):
        services.start_comparison(domain=dense_domain, by=bob, candidates=[str(tmp_path / "missing")])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    comparison = services.start_comparison(domain=dense_domain, by=bob, candidates=[str(tiny_bert), str(broken)])
    run_job(comparison.job.pk)
    comparison = EmbeddingComparison.objects.get(pk=comparison.pk)
    assert comparison.job.status == Job.Status.SUCCEEDED, comparison.job.error
    names = [row["name"] for row in comparison.results]
    assert str(tiny_bert) in names and "bm25" in names and comparison.queries == 5
    failed = [row for row in comparison.results if row.get("error")]
    assert [row["name"] for row in failed] == [str(broken)]
    scored = [row for row in comparison.results if not row.get("error")]
    assert all(0.0 <= row["hit@1"] <= row["hit@5"] <= 1.0 for row in scored)


def test_a_comparison_needs_questions(domain, data_dir, bob, sent):
    make_chunks(domain)
    with pytest.raises(ValidationError, match="no questions"):
        services.start_comparison(domain=domain, by=bob, candidates=["embedded:all-minilm-l6-v2"])
    with pytest.raises(ValidationError, match="Unknown embedded"):
        services.start_comparison(domain=domain, by=bob, candidates=["embedded:bge"])


def test_a_reranker_rescores_the_hybrid_hits_and_a_bad_one_is_refused(bm25_only, bob, tiny_bert, tmp_path,  # noqa: F811
                                                                      sent):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    with pytest.raises(ValidationError, match="cross-encoder folder"):
        services.update_index_settings(domain=bm25_only, by=bob, reranker=str(tmp_path / "none"))
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)) \
        .save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    build(bm25_only)
    assert services.update_index_settings(domain=bm25_only, by=bob, reranker=str(tmp_path / "ce")) is None  # no rebuild
    found = services.search(domain=bm25_only, query="E100 over-current", k=2)
    assert found["reranker"] == str(tmp_path / "ce")
    hybrid, bm25 = found["results"]["hybrid"], services.search(domain=bm25_only, query="E100 over-current",
                                                               k=20, methods=["bm25"])["results"]["bm25"]
    assert [h["rank"] for h in hybrid] == [1, 2] and {h["chunk_id"] for h in hybrid} <= {h["chunk_id"] for h in bm25}
    assert hybrid[0]["score"] >= hybrid[1]["score"]
