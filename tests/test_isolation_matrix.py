"""Every domain URL in the URL conf × caller → expected status, generated so a new endpoint cannot escape.

The URL list is walked from the resolver: any pattern with a domain ``slug`` is checked,
with real object ids of the domain filled in for the other parameters.
"""
from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from domains.jobs import enqueue_job
from domains.models import ApiKey, Document, Membership

SLUG_KWARG = re.compile(r"<slug:slug>|\(\?P<slug>[^)]*\)")
PK_KWARG = re.compile(r"<int:pk>|\(\?P<pk>[^)]*\)")


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


DOMAIN_ROUTES = sorted({r for r in _walk(get_resolver().url_patterns) if SLUG_KWARG.search(r)})


def test_the_matrix_covers_the_domain_pages_and_api():
    assert any(r.startswith("d/") for r in DOMAIN_ROUTES) and any(r.startswith("api/") for r in DOMAIN_ROUTES)
    assert len(DOMAIN_ROUTES) >= 20


@pytest.fixture
def ids(domain, alice, bob, data_dir):
    key, _ = ApiKey.issue(domain=domain, name="crm", scope="read", created_by=alice)
    job = enqueue_job(domain=domain, kind="selfcheck", created_by=alice)
    document = Document.objects.create(domain=domain, filename="rules.txt", content_hash="0" * 64, status="ready")
    from datasets_app.models import QADataset, QAPair, TeacherConfig
    from datasets_app.services import add_pair, add_teacher_key
    from datasets_app.versions import freeze_dataset

    dataset = QADataset.default_for(domain)
    pair = add_pair(dataset=dataset, by=alice, question="报销需要什么？", answer="发票。", approve=True)
    version = freeze_dataset(dataset=dataset, by=alice).version
    teacher = TeacherConfig.objects.create(domain=domain, name="deepseek", provider="openai", model="deepseek-chat",
                                           base_url="https://api.deepseek.com/v1")
    teacher_key = add_teacher_key(teacher=teacher, label="main", secret="sk-test-0123456789abcdef", by=alice)
    assert isinstance(pair, QAPair)
    from training_app.models import ModelVersion, TrainingRun

    tb = data_dir / "domains" / domain.slug / "runs" / "tb"
    tb.mkdir(parents=True)
    (tb / "events.out.tfevents.1.host").write_bytes(b"\0" * 16)
    run = TrainingRun.objects.create(domain=domain, base_model="embedded:gemma3-270m", config={},
                                     metrics={"experiment_log": {"tensorboard": str(tb.relative_to(data_dir))}})
    model = ModelVersion.objects.create(domain=domain, number=1, base_model="embedded:gemma3-270m")
    from training_app.models import ModelExport

    export = ModelExport.objects.create(domain=domain, model_version=model)
    folder = data_dir / "domains" / domain.slug / "exports" / str(export.pk)
    folder.mkdir(parents=True)
    (folder / "export.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    ModelExport.objects.filter(pk=export.pk).update(
        output_path=str(folder.relative_to(data_dir)),
        files={"archive": {"name": "finance-v1.zip", "path": str((folder / "export.zip").relative_to(data_dir)),
                           "bytes": 22, "sha256": "0" * 64}})
    from inference_app.models import EmbeddingComparison

    comparison = EmbeddingComparison.objects.create(domain=domain, candidates=["embedded:all-minilm-l6-v2"])
    from training_app.models import EvaluationRun

    evaluation = EvaluationRun.objects.create(domain=domain, model_version=model, dataset_version=version,
                                              configurations=["base", "model"])
    from inference_app.models import Conversation, Message

    conversation = Conversation.objects.create(domain=domain, user=alice, title="报销")
    Message.objects.create(domain=domain, conversation=conversation, role="user", content="报销？")
    answer = Message.objects.create(domain=domain, conversation=conversation, role="assistant", content="发票。")
    from inference_app.models import AnswerBatch

    batch = AnswerBatch.objects.create(domain=domain, filename="q.csv", questions=["报销？"],
                                       storage_path=f"domains/{domain.slug}/batches/1")
    batch.folder.mkdir(parents=True)
    (batch.folder / "answers.csv").write_text("question,answer\n报销？,发票。\n", encoding="utf-8")
    return {
        "batches": batch.pk, "chat": conversation.pk, "messages": answer.pk,
        "evaluations": evaluation.pk,
        "embedding-comparisons": comparison.pk, "comparisons": comparison.pk,
        "members": Membership.objects.get(domain=domain, user=bob).pk,
        "api-keys": key.pk, "keys": key.pk, "jobs": job.pk, "documents": document.pk,
        "datasets": dataset.pk, "pairs": pair.pk, "versions": version.pk, "teachers": teacher.pk,
        "teacher-keys": teacher_key.pk, "runs": run.pk, "models": model.pk, "exports": export.pk,
    }


def _url(route: str, ids: dict, slug: str = "finance") -> str:
    path = SLUG_KWARG.sub(slug, route).replace("^", "").replace("$", "").replace("/?", "/")
    if PK_KWARG.search(path):
        collection = PK_KWARG.split(path)[0].rstrip("/").rsplit("/", 1)[-1]
        path = PK_KWARG.sub(str(ids[collection]), path)
    return "/" + path


@pytest.mark.parametrize("route", DOMAIN_ROUTES)
def test_stranger_gets_404_for_every_method(route, ids, charlie, other_domain):
    url = _url(route, ids)
    if route.startswith("api/"):
        client = APIClient()
        client.force_login(charlie)
    else:
        from django.test import Client

        client = Client()
        client.force_login(charlie)
    nowhere = _url(route, ids, slug="no-such-domain")
    statuses = {}
    for method in ("get", "post", "put", "patch", "delete"):
        status = getattr(client, method)(url).status_code
        # A method the route never accepts may answer 405 before the gate, but exactly as it
        # does for a domain that does not exist: nothing about the domain leaks.
        assert status in (404, 405), f"{method.upper()} {url} as a stranger gave {status}"
        assert status == getattr(client, method)(nowhere).status_code, f"{method.upper()} {url} differs"
        statuses[method] = status
    assert 404 in statuses.values(), f"{url} never reached the access gate"


@pytest.mark.parametrize("route", [r for r in DOMAIN_ROUTES if r.startswith("api/")])
def test_key_of_another_domain_gets_404(route, ids, other_domain, charlie):
    _, secret = ApiKey.issue(domain=other_domain, name="theirs", scope="read_write", created_by=charlie)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    url = _url(route, ids)
    for method in ("get", "post", "delete"):
        status = getattr(client, method)(url).status_code
        assert status == 404, f"{method.upper()} {url} with another domain's key gave {status}"


@pytest.mark.parametrize("route", DOMAIN_ROUTES)
def test_anonymous_is_sent_to_log_in(route, ids, client):
    url = _url(route, ids)
    response = client.get(url)
    if route.startswith("api/"):
        assert response.status_code in (401, 403), url
    else:
        assert response.status_code == 302 and "/login/" in response["Location"], url


# Asking changes nothing: viewers may POST a question (and rate the answers they got).
VIEWER_POSTS = re.compile(r"/ask/(\?)?\$?$|/chat/ask/$|/chat/stream/$|/chat/messages/<int:pk>/feedback/$")


def test_the_routes_viewers_may_post_to_exist():
    assert len([r for r in DOMAIN_ROUTES if VIEWER_POSTS.search(r)]) == 5


@pytest.mark.parametrize("route", DOMAIN_ROUTES)
def test_viewer_cannot_write(route, ids, vera):
    url = _url(route, ids)
    client = APIClient()
    client.force_login(vera)
    for method in ("post", "put", "patch", "delete"):
        status = getattr(client, method)(url).status_code
        if method == "post" and VIEWER_POSTS.search(route):
            # reached the form or the gate: an empty question is 400; alice's message is not vera's (404)
            assert status in (400, 404), f"POST {url} as a viewer gave {status}"
            continue
        assert status in (403, 405), f"{method.upper()} {url} as a viewer gave {status}"


@pytest.mark.parametrize("route", DOMAIN_ROUTES)
def test_owner_reaches_every_route(route, ids, alice):
    """The URLs built above are real: the owner is never told they do not exist."""
    client = APIClient()
    client.force_login(alice)
    response = client.get(_url(route, ids))
    if route.endswith("retrieval/search/$"):  # a search needs its query: 400 naming the parameter, not 404
        assert response.status_code == 400 and "q" in response.json()
        response = client.get(_url(route, ids) + "?q=x")
        assert response.status_code == 400 and "index" in response.json()  # reached the service: no index yet
        return
    assert response.status_code in (200, 405)


# Owners only: members, API keys, teachers' keys, a teacher's settings, the audit log, the chat deployment.
OWNER_ONLY = re.compile(r"^d/<slug:slug>/(members|keys|audit)/|^api/\^domains/.*/(api-keys|teacher-keys)/"
                        r"|^d/<slug:slug>/teachers/<int:pk>/|/chat/settings/$")
# Experts read the member list through the API; only owners change it.
OWNER_WRITES = re.compile(r"^api/\^domains/.*/members/")
# A conversation is its author's: another member of the domain gets 404 (the ids fixture's is alice's).
PERSONAL = re.compile(r"/chat/<int:pk>/$")


def test_the_owner_only_routes_exist():
    assert len([r for r in DOMAIN_ROUTES if OWNER_ONLY.search(r)]) >= 10


@pytest.mark.parametrize("route", DOMAIN_ROUTES)
def test_expert_reaches_every_route_but_the_owners(route, ids, bob):
    client = APIClient()
    client.force_login(bob)
    url = _url(route, ids)
    status = client.get(url).status_code
    if OWNER_ONLY.search(route):
        post = client.post(url).status_code
        assert (status in (403, 405)) and post in (403, 405), f"{url} as an expert: GET {status}, POST {post}"
    elif OWNER_WRITES.search(route):
        assert status == 200 and client.delete(url).status_code in (403, 405), url
    elif PERSONAL.search(route):
        assert status == 404, f"GET {url} (alice's conversation) as bob gave {status}"
    else:
        assert status in (200, 400, 405), f"GET {url} as an expert gave {status}"
