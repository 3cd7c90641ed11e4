"""Serving: the ask API, the OpenAI-compatible API through the official client, chat pages,
feedback into the review queue, keys kept to their domain, rate limits and the request log."""
from __future__ import annotations

import json
import shutil
import threading

import pytest

from datasets_app.models import QAPair
from domains.jobs import run_job
from domains.models import ApiKey
from inference_app import serving
from inference_app import services as retrieval
from inference_app.models import ApiRequest, Conversation, Deployment, Feedback, Message, RetrievalIndex
from training_app.models import ModelVersion

from .test_distill_jobs import make_chunks
from .training_engine.conftest import tiny_models, tiny_tokenizers  # noqa: F401 - fixtures used by name

NOT_COVERED = "文档中没有涉及这个问题。"
COVERED_Q = "报销单据金额在3000元及以上需要签订什么？"
OFF_DOMAIN_Q = "火星上的天气怎么样？"


@pytest.fixture
def served(domain, data_dir, tiny_models):  # noqa: F811
    """The finance articles as chunks, a BM25 index, and an active 'fine-tuned' version (the tiny Qwen)."""
    _doc, chunks = make_chunks(domain)
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    run_job(retrieval.start_index_build(domain=domain).pk)
    folder = data_dir / "domains" / domain.slug / "runs" / "1" / "model"
    shutil.copytree(tiny_models["qwen"], folder)
    version = ModelVersion.objects.create(domain=domain, number=1, kind="sft", base_model="tiny",
                                          base_path=tiny_models["qwen"], adapter_path=str(folder.relative_to(data_dir)),
                                          is_active=True)
    Deployment.objects.create(domain=domain, k=2, threshold=0.4, generation={"max_new_tokens": 8, "temperature": 0})
    return {"chunks": chunks, "version": version}


def key_for(domain, alice, scope="read") -> str:
    _key, secret = ApiKey.issue(domain=domain, name="crm", scope=scope, created_by=alice)
    return secret


# POST /api/domains/<slug>/ask/ -----------------------------------------------------------------


def test_ask_answers_with_the_active_model_and_cites_the_right_chunk(served, domain, alice, api_as):
    api = api_as()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key_for(domain, alice)}")
    response = api.post("/api/domains/finance/ask/", {"question": COVERED_Q}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["covered"] is True and body["mode"] == "grounded" and body["model_version"] == 1
    assert body["answer"] and "transformers" in body["model"]
    top = body["citations"][0]
    assert top["passage_id"] == str(served["chunks"][0].pk) and "3000元" in top["quote"]
    assert top["document"] == "报销管理办法.pdf" and top["url"].endswith(f"/d/finance/documents/{top['document_id']}/")
    assert set(body["timing"]) == {"retrieval_ms", "generation_ms", "total_ms"} and body["timing"]["generation_ms"] > 0
    # the short path of the same endpoint
    assert api.post("/api/d/finance/ask", {"question": COVERED_Q}, format="json").json()["covered"] is True


def test_an_off_domain_question_is_not_covered_and_the_model_is_not_asked(served, domain, alice, api_as):
    api = api_as(alice)
    body = api.post("/api/domains/finance/ask/", {"question": OFF_DOMAIN_Q}, format="json").json()
    assert body["covered"] is False and body["answer"] == NOT_COVERED
    assert body["timing"]["generation_ms"] == 0


def test_extractive_mode_and_a_domain_without_a_model(served, domain, alice, api_as):
    api = api_as(alice)
    body = api.post("/api/domains/finance/ask/", {"question": COVERED_Q, "mode": "extractive"}, format="json").json()
    assert body["mode"] == "extractive" and "3000元" in body["answer"] and body["model_version"] is None
    ModelVersion.objects.filter(pk=served["version"].pk).update(is_active=False)
    body = api.post("/api/domains/finance/ask/", {"question": COVERED_Q}, format="json").json()
    assert body["mode"] == "extractive" and body["covered"] is True  # no model: the best passage, not an error


def test_ask_refuses_bad_input_and_says_what_is_missing(domain, alice, api_as, data_dir):
    api = api_as(alice)
    assert "question" in api.post("/api/domains/finance/ask/", {}, format="json").json()
    bad = api.post("/api/domains/finance/ask/", {"question": "x", "mode": "psychic"}, format="json")
    assert bad.status_code == 400 and "mode" in bad.json()
    nothing = api.post("/api/domains/finance/ask/", {"question": "报销？"}, format="json")
    assert nothing.status_code == 503 and "index" in nothing.json()["detail"]


def test_a_version_whose_files_are_gone_fails_clearly(served, domain, alice, api_as, data_dir):
    shutil.rmtree(data_dir / served["version"].adapter_path)
    response = api_as(alice).post("/api/domains/finance/ask/", {"question": COVERED_Q}, format="json")
    assert response.status_code == 503 and "does not exist" in response.json()["detail"]


def test_rate_limit_per_key_and_a_request_log_without_secrets(served, domain, alice, api_as):
    Deployment.objects.filter(domain=domain).update(rate_limit=2)
    secret = key_for(domain, alice)
    api = api_as()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    codes = [api.post("/api/domains/finance/ask/", {"question": OFF_DOMAIN_Q}, format="json").status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]
    other = api_as()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {key_for(domain, alice)}")  # another key has its own budget
    assert other.post("/api/domains/finance/ask/", {"question": OFF_DOMAIN_Q}, format="json").status_code == 200
    rows = list(ApiRequest.objects.for_domain(domain).values())
    assert len(rows) == 3 and {r["status"] for r in rows} == {200} and all(r["covered"] is False for r in rows)
    assert secret not in json.dumps(rows, default=str) and OFF_DOMAIN_Q not in json.dumps(rows, default=str)


# OpenAI-compatible, through the official client against the running server ---------------------------


@pytest.fixture
def openai_client(served, domain, alice, live_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_server.url}/v1", api_key=key_for(domain, alice), max_retries=0, timeout=60)


@pytest.mark.django_db(transaction=True)
def test_openai_client_lists_the_key_s_domain_and_answers(openai_client, other_domain):
    assert [m.id for m in openai_client.models.list().data] == ["finance"]
    done = openai_client.chat.completions.create(model="finance", messages=[
        {"role": "system", "content": "ignored: VSM writes its own grounded prompt"},
        {"role": "user", "content": COVERED_Q}], max_tokens=6)
    assert done.object == "chat.completion" and done.choices[0].message.role == "assistant"
    assert done.choices[0].finish_reason == "stop" and done.choices[0].message.content
    extra = done.model_extra["vsm"]
    assert extra["covered"] is True and extra["citations"][0]["quote"].startswith("第三条")
    assert done.usage.completion_tokens > 0
    refused = openai_client.chat.completions.create(model="finance",
                                                    messages=[{"role": "user", "content": OFF_DOMAIN_Q}])
    assert refused.choices[0].message.content == NOT_COVERED and refused.model_extra["vsm"]["covered"] is False


@pytest.mark.django_db(transaction=True)
def test_openai_client_streams_the_same_answer(openai_client):
    whole = openai_client.chat.completions.create(model="finance", messages=[{"role": "user", "content": COVERED_Q}],
                                                  temperature=0, max_tokens=6)
    chunks = list(openai_client.chat.completions.create(
        model="finance", messages=[{"role": "user", "content": COVERED_Q}], temperature=0, max_tokens=6, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) >= 3 and chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].model_extra["vsm"]["citations"][0]["rank"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_key_cannot_reach_another_domain_through_v1(openai_client, live_server, other_domain, charlie):
    from openai import NotFoundError, OpenAI

    with pytest.raises(NotFoundError):
        openai_client.chat.completions.create(model="pigs", messages=[{"role": "user", "content": "feed?"}])
    theirs = OpenAI(base_url=f"{live_server.url}/v1", api_key=key_for(other_domain, charlie), max_retries=0)
    assert [m.id for m in theirs.models.list().data] == ["pigs"]
    with pytest.raises(NotFoundError):
        theirs.chat.completions.create(model="finance", messages=[{"role": "user", "content": COVERED_Q}])


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_share_one_cached_model(openai_client, served, data_dir):
    from inference_app.engine import generation

    generation.unload_generators()

    def ask(i, out):
        out[i] = openai_client.chat.completions.create(
            model="finance", messages=[{"role": "user", "content": COVERED_Q}], temperature=0,
            max_tokens=6).choices[0].message.content

    results: dict[int, str] = {}
    threads = [threading.Thread(target=ask, args=(i, results)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 4 and len(set(results.values())) == 1  # greedy: the same answer, none corrupted
    folder = str((data_dir / served["version"].adapter_path).resolve())
    assert [k[0] for k in generation._generators] == [folder]  # loaded once, shared by the four requests


@pytest.mark.django_db(transaction=True)
def test_a_remote_backend_answers_through_another_openai_compatible_server(openai_client, live_server, domain, alice,
                                                                         other_domain, charlie):
    """A deployment whose model is a remote server (here: this server's /v1 for the finance domain)."""
    make_chunks(other_domain, filename="remote.pdf")
    RetrievalIndex.objects.create(domain=other_domain, dense_enabled=False)
    run_job(retrieval.start_index_build(domain=other_domain).pk)
    from datasets_app import crypto

    Deployment.objects.create(domain=other_domain, backend="remote", mode="model_only", remote_url=f"{live_server.url}/v1",
                              remote_model="finance", remote_key_encrypted=crypto.encrypt(key_for(domain, alice)))
    answer, engine = serving.ask(domain=other_domain, question=COVERED_Q)
    assert answer.mode == "model_only" and answer.text and "finance" in engine.label


# Chat pages --------------------------------------------------------------------------------------


def test_a_viewer_chats_without_javascript_and_the_turn_is_kept(served, domain, vera, client_as):
    client = client_as(vera)
    page = client.get("/d/finance/chat/")
    assert page.status_code == 200 and b"chat-form" in page.content and b"v1" in page.content
    response = client.post("/d/finance/chat/ask/", {"question": COVERED_Q})
    conversation = Conversation.objects.get(domain=domain, user=vera)
    assert response.status_code == 302 and response["Location"] == f"/d/finance/chat/{conversation.pk}/#last"
    user_msg, reply = conversation.messages.all()
    assert user_msg.content == COVERED_Q and reply.role == "assistant" and reply.covered is True
    assert reply.model_version == served["version"] and reply.citations[0]["passage_id"] == str(served["chunks"][0].pk)
    html = client.get(f"/d/finance/chat/{conversation.pk}/").content.decode()
    assert f'id="m{reply.pk}-c1"' in html and "<mark>" in html and "报销管理办法.pdf" in html
    # a follow-up goes into the same conversation
    client.post("/d/finance/chat/ask/", {"question": OFF_DOMAIN_Q, "conversation": conversation.pk})
    refused = conversation.messages.last()
    assert conversation.messages.count() == 4 and refused.content == NOT_COVERED
    assert refused.model_version is None and refused.model_label == "retrieval only"  # the model was not asked


def test_the_stream_sends_tokens_then_the_finished_message(served, domain, bob, client_as):
    client = client_as(bob)
    response = client.post("/d/finance/chat/stream/", {"question": COVERED_Q})
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = []
    for block in b"".join(response.streaming_content).decode().strip().split("\n\n"):
        name, data = block.split("\n")
        events.append((name[len("event: "):], json.loads(data[len("data: "):])))
    names = [n for n, _ in events]
    assert names[0] == "conversation" and names[1] == "citations" and names[-1] == "done" and "token" in names
    tokens = "".join(d["text"] for n, d in events if n == "token")
    reply = Message.objects.get(pk=events[-1][1]["message_id"])
    assert reply.content == tokens.strip() and f'id="m{reply.pk}"' in events[-1][1]["html"]
    assert reply.conversation.user == bob


def test_chat_refuses_strangers_other_people_s_conversations_and_empty_questions(served, domain, bob, vera, charlie,
                                                                                client_as):
    client = client_as(bob)
    client.post("/d/finance/chat/ask/", {"question": COVERED_Q})
    mine = Conversation.objects.get(user=bob)
    client = client_as(vera)
    assert client.get(f"/d/finance/chat/{mine.pk}/").status_code == 404
    assert client.post("/d/finance/chat/ask/", {"question": "x", "conversation": mine.pk}).status_code == 404
    assert client.post("/d/finance/chat/ask/", {"question": "  "}).status_code == 400
    assert client.post("/d/finance/chat/stream/", {"question": ""}).status_code == 400
    client = client_as(charlie)
    assert client.get("/d/finance/chat/").status_code == 404
    assert client.post("/d/finance/chat/stream/", {"question": COVERED_Q}).status_code == 404


def test_feedback_with_a_correction_becomes_a_pending_pair(served, domain, vera, bob, client_as):
    client = client_as(vera)
    client.post("/d/finance/chat/ask/", {"question": COVERED_Q})
    reply = Message.objects.get(role="assistant", conversation__user=vera)
    response = client.post(f"/d/finance/chat/messages/{reply.pk}/feedback/",
                           {"rating": "-1", "correction": "需要签订协议。"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"correction sent to review" in response.content
    feedback = Feedback.objects.get(message=reply)
    pair = feedback.pair
    assert feedback.rating == -1 and pair.status == QAPair.Status.PENDING and pair.source == QAPair.Source.FEEDBACK
    assert pair.question == COVERED_Q and pair.answer == "需要签订协议。" and pair.chunk == served["chunks"][0]
    # a thumbs-up later changes the rating and makes no second pair
    client.post(f"/d/finance/chat/messages/{reply.pk}/feedback/", {"rating": "1", "correction": "需要签订协议。"})
    assert Feedback.objects.get(message=reply).rating == 1 and QAPair.objects.filter(source="feedback").count() == 1
    # someone else's answer is not theirs to rate
    assert client_as(bob).post(f"/d/finance/chat/messages/{reply.pk}/feedback/", {"rating": "1"}).status_code == 404


def test_the_public_link_is_off_until_the_owner_turns_it_on(served, domain, alice, vera, client, client_as):
    deployment = Deployment.objects.get(domain=domain)
    assert client.get("/p/nothing/").status_code == 404
    assert client_as(vera).post("/d/finance/chat/settings/", {"mode": "grounded"}).status_code == 403
    owner = client_as(alice)
    response = owner.post("/d/finance/chat/settings/", {
        "mode": "grounded", "backend": "auto", "k": 2, "threshold": 0.4, "public": "on", "rate_limit": 30,
        "temperature": 0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.0, "max_new_tokens": 8})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.public and len(deployment.public_token) >= 24 and deployment.generation["temperature"] == 0
    owner.logout()
    url = f"/p/{deployment.public_token}/"
    assert client.get(url).status_code == 200
    assert client.post(url + "ask/", {"question": COVERED_Q}).status_code == 302
    visitor = Conversation.objects.get(user=None)
    assert visitor.messages.count() == 2 and client.get(f"{url}{visitor.pk}/").status_code == 200
    from django.test import Client

    assert Client().get(f"{url}{visitor.pk}/").status_code == 404  # another visitor's session sees nothing
    deployment.public = False
    deployment.save()
    assert client.get(url).status_code == 404


def test_deployment_settings_validate(served, domain, alice, client_as):
    owner = client_as(alice)
    response = owner.post("/d/finance/chat/settings/", {
        "mode": "grounded", "backend": "remote", "k": 50, "threshold": 2, "rate_limit": 30,
        "temperature": 0.7, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.2, "max_new_tokens": 256})
    assert response.status_code == 400
    errors = response.context["settings_form"].errors
    assert "k" in errors and "threshold" in errors and "__all__" in errors
    assert Deployment.objects.get(domain=domain).k == 2  # nothing saved


# Batch answering -----------------------------------------------------------------------------------


def test_a_batch_of_questions_is_answered_as_a_job_and_downloaded_as_csv(served, domain, bob, vera, api_as):
    import csv
    import io

    from domains.models import Job
    from inference_app.models import AnswerBatch

    api = api_as(bob)
    upload = io.BytesIO(f"id,问题\n1,{COVERED_Q}\n2,{OFF_DOMAIN_Q}\n".encode("gbk"))  # Excel's Chinese CSV
    upload.name = "questions.csv"
    response = api.post("/api/domains/finance/batches/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["question_count"] == 2 and body["download_url"] is None
    assert api.get(f"/api/domains/finance/batches/{body['id']}/download/").status_code == 404  # not answered yet
    batch = AnswerBatch.objects.get(pk=body["id"])
    assert batch.questions == [COVERED_Q, OFF_DOMAIN_Q]
    run_job(batch.job.pk)
    batch.refresh_from_db()
    assert batch.job.status == Job.Status.SUCCEEDED and (batch.answered, batch.covered) == (2, 1)
    detail = api_as(vera).get(f"/api/domains/finance/batches/{batch.pk}/").json()  # viewers read and download
    download = api_as(vera).get(detail["download_url"])
    assert download.status_code == 200 and download["Content-Disposition"].endswith('questions-answers.csv"')
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig"))))
    assert [r["question"] for r in rows] == [COVERED_Q, OFF_DOMAIN_Q]
    assert rows[0]["covered"] == "yes" and rows[0]["sources"].startswith("[1] 报销管理办法.pdf")
    assert json.loads(rows[0]["citations"])[0]["passage_id"] == str(served["chunks"][0].pk)
    assert rows[0]["model_version"] == "1" and rows[1]["answer"] == NOT_COVERED and rows[1]["model_version"] == ""


def test_a_retried_batch_answers_only_what_is_missing(served, domain, bob, monkeypatch):
    from inference_app import tasks
    from inference_app.engine import answering

    batch = serving.start_batch(domain=domain, by=bob, data="\n".join([COVERED_Q, OFF_DOMAIN_Q, "住宿费标准？"]).encode(),
                                filename="q.txt", mode="extractive")
    batch.folder.mkdir(parents=True)
    first = answering.answer_question(COVERED_Q, mode="extractive", index=serving.engine_for(domain).index)
    (batch.folder / "answers.jsonl").write_text(
        json.dumps({"position": 0, "question": COVERED_Q, **first.to_dict()}, ensure_ascii=False) + "\n"
        + '{"position": 1, "quest', encoding="utf-8")  # the second line was cut short by a killed worker
    asked = []
    real = answering.answer_question
    monkeypatch.setattr(answering, "answer_question", lambda q, **kw: asked.append(q) or real(q, **kw))
    run_job(batch.job.pk)
    assert asked == [OFF_DOMAIN_Q, "住宿费标准？"]  # the first answer was kept
    text = (batch.folder / "answers.csv").read_text(encoding="utf-8-sig")
    assert text.count("\n") == 4 and not list(batch.folder.glob(".*tmp"))
    assert tasks  # the handler module is what ran


@pytest.mark.parametrize("data, name, message", [
    (b"", "q.csv", "empty"),
    (b"\x00\x01PK binary", "q.csv", "not a text"),
    (b"question\n" + b"q?\n" * 2001, "q.csv", "At most 2000"),
    (b"question\n\n", "q.csv", "no questions"),
])
def test_batch_files_that_cannot_be_used_are_refused_clearly(domain, bob, api_as, data, name, message):
    import io

    upload = io.BytesIO(data)
    upload.name = name
    response = api_as(bob).post("/api/domains/finance/batches/", {"file": upload}, format="multipart")
    assert response.status_code == 400 and message in json.dumps(response.json()), response.json()
    from inference_app.models import AnswerBatch

    assert not AnswerBatch.objects.exists()


def test_viewers_and_read_keys_cannot_start_batches(domain, vera, alice, api_as):
    import io

    upload = io.BytesIO(b"question\nq?\n")
    upload.name = "q.csv"
    assert api_as(vera).post("/api/domains/finance/batches/", {"file": upload}, format="multipart").status_code == 403


def test_a_new_active_version_frees_the_loaded_model(served, domain, alice, api_as, django_capture_on_commit_callbacks):
    from inference_app.engine import generation

    api_as(alice).post("/api/domains/finance/ask/", {"question": COVERED_Q}, format="json")
    assert generation._generators  # loaded for the chat
    with django_capture_on_commit_callbacks(execute=True):
        served["version"].demote()
    assert not generation._generators
