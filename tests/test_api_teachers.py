"""API: /api/domains/<slug>/teachers/ and /teacher-keys/ — owners manage them; a secret never comes back."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from datasets_app.models import TeacherConfig, TeacherKey
from datasets_app.services import add_teacher_key
from domains.models import ApiKey

pytestmark = pytest.mark.django_db

TEACHERS = "/api/domains/finance/teachers/"
KEYS = "/api/domains/finance/teacher-keys/"
SECRET = "sk-live-THIS-IS-THE-SECRET-0123456789abcdef"


def teacher_url(teacher, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/teachers/{getattr(teacher, 'pk', teacher)}/"


def key_url(key, slug: str = "finance") -> str:
    return f"/api/domains/{slug}/teacher-keys/{getattr(key, 'pk', key)}/"


def key_client(domain, scope: str = "read_write") -> APIClient:
    _, secret = ApiKey.issue(domain=domain, name="integration", scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def assert_no_secret(response) -> None:
    raw = response.content.decode("utf-8", "replace")
    assert SECRET not in raw
    assert SECRET[8:24] not in raw  # not even a piece of it
    assert "secret_encrypted" not in raw


@pytest.fixture
def teacher(domain, alice):
    return TeacherConfig.objects.create(domain=domain, name="deepseek", provider="openai", model="deepseek-chat",
                                        base_url="https://api.deepseek.com/v1", created_by=alice)


@pytest.fixture
def stored_key(teacher, alice):
    return add_teacher_key(teacher=teacher, label="main", secret=SECRET, by=alice)


@pytest.fixture
def pig_teacher(other_domain, charlie):
    teacher = TeacherConfig.objects.create(domain=other_domain, name="gemini", provider="gemini",
                                           model="gemini-2.5-flash")
    add_teacher_key(teacher=teacher, label="theirs", secret="sk-pig-secret-abcdef0123", by=charlie)
    return teacher


# --- teachers ----------------------------------------------------------------------------


def test_owner_adds_a_teacher(api_as, alice, domain):
    response = api_as(alice).post(TEACHERS, {
        "name": "qwen", "provider": "openai", "model": "qwen-plus",
        "base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1", "concurrency": 8, "rpm": 60,
    }, format="json")
    assert response.status_code == 201, response.data
    teacher = TeacherConfig.objects.get(pk=response.data["id"])
    assert (teacher.domain, teacher.name, teacher.concurrency, teacher.rpm, teacher.created_by) == (
        domain, "qwen", 8, 60, alice)
    assert response["Location"] == teacher_url(teacher)
    assert response.data["env_var"] == "VSM_TEACHER_KEYS_QWEN" and response.data["key_count"] == 0


@pytest.mark.parametrize("payload", [
    {"name": "g", "provider": "gemini"},  # a Gemini teacher needs a model
    {"name": "l", "provider": "llamacpp"},  # llama.cpp needs a GGUF path
    {"name": "o", "provider": "openai"},  # OpenAI-compatible needs a model
    {"name": "bad name!", "provider": "openai", "model": "m"},
    {"name": "x", "provider": "oracle", "model": "m"},
    {"name": "x", "provider": "openai", "model": "m", "temperature": 3},
])
def test_teacher_rules_are_checked(api_as, alice, domain, payload):
    response = api_as(alice).post(TEACHERS, payload, format="json")
    assert response.status_code == 400, response.data
    assert not TeacherConfig.objects.exists()


def test_teacher_names_are_unique_per_domain(api_as, alice, charlie, teacher, other_domain):
    payload = {"name": "deepseek", "provider": "openai", "model": "deepseek-chat"}
    duplicate = api_as(alice).post(TEACHERS, payload, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.data
    assert api_as(charlie).post("/api/domains/pigs/teachers/", payload, format="json").status_code == 201


def test_owner_changes_a_teacher_and_makes_it_the_default(api_as, alice, domain, teacher):
    old_default = TeacherConfig.objects.create(domain=domain, name="old", provider="openai", model="m",
                                               is_default=True)
    response = api_as(alice).patch(teacher_url(teacher), {"model": "deepseek-reasoner", "is_default": True},
                                   format="json")
    assert response.status_code == 200, response.data
    assert response.data["model"] == "deepseek-reasoner" and response.data["is_default"] is True
    old_default.refresh_from_db()
    assert old_default.is_default is False  # one default per domain


def test_a_change_that_breaks_the_rules_is_400(api_as, alice, teacher):
    response = api_as(alice).patch(teacher_url(teacher), {"provider": "llamacpp"}, format="json")
    assert response.status_code == 400
    teacher.refresh_from_db()
    assert teacher.provider == "openai"


def test_owner_removes_a_teacher_with_its_keys(api_as, alice, teacher, stored_key):
    assert api_as(alice).delete(teacher_url(teacher)).status_code == 204
    assert not TeacherConfig.objects.filter(pk=teacher.pk).exists()
    assert not TeacherKey.objects.filter(pk=stored_key.pk).exists()


def test_members_and_read_keys_list_teachers_without_secrets(api_as, bob, vera, domain, teacher, stored_key,
                                                             pig_teacher):
    for client in (api_as(bob), api_as(vera), key_client(domain, "read")):
        response = client.get(TEACHERS)
        assert response.status_code == 200
        assert [t["id"] for t in response.data["results"]] == [teacher.pk]
        assert response.data["results"][0]["key_count"] == 1
        assert "keys" not in response.data["results"][0]
        assert_no_secret(response)
        assert_no_secret(client.get(teacher_url(teacher)))


@pytest.mark.parametrize("who", ["expert", "viewer"])
def test_only_owners_write_teachers(api_as, users, teacher, who):
    client = api_as(users[who])
    assert client.post(TEACHERS, {"name": "x", "provider": "openai", "model": "m"}, format="json").status_code == 403
    assert client.patch(teacher_url(teacher), {"model": "other"}, format="json").status_code == 403
    assert client.delete(teacher_url(teacher)).status_code == 403
    teacher.refresh_from_db()
    assert teacher.model == "deepseek-chat" and TeacherConfig.objects.count() == 1


def test_read_write_key_cannot_write_teachers(domain, teacher):
    client = key_client(domain, "read_write")
    assert client.post(TEACHERS, {"name": "x", "provider": "openai", "model": "m"}, format="json").status_code == 403
    assert client.delete(teacher_url(teacher)).status_code == 403


def test_other_domains_teacher_is_404(api_as, alice, domain, pig_teacher):
    client = api_as(alice)
    assert client.get(teacher_url(pig_teacher)).status_code == 404
    assert client.patch(teacher_url(pig_teacher), {"model": "mine"}, format="json").status_code == 404
    assert client.delete(teacher_url(pig_teacher)).status_code == 404
    assert TeacherConfig.objects.filter(pk=pig_teacher.pk, model="gemini-2.5-flash").exists()


# --- teacher keys ------------------------------------------------------------------------


def test_owner_stores_a_key_and_never_sees_it_again(api_as, alice, teacher):
    client = api_as(alice)
    response = client.post(KEYS, {"teacher": teacher.pk, "label": "主账号", "secret": f"  {SECRET}\n"},
                           format="json")
    assert response.status_code == 201, response.data
    assert_no_secret(response)
    assert response["Cache-Control"] == "no-store"
    key = TeacherKey.objects.get(pk=response.data["id"])
    assert key.reveal() == SECRET and SECRET not in key.secret_encrypted
    assert (key.teacher, key.label, key.created_by) == (teacher, "主账号", alice)
    assert response.data["fingerprint"] == key.fingerprint and len(key.fingerprint) == 8
    assert "secret" not in response.data

    for url in (KEYS, key_url(key), f"{KEYS}?teacher={teacher.pk}", TEACHERS, teacher_url(teacher)):
        shown = client.get(url)
        assert shown.status_code == 200
        assert_no_secret(shown)


def test_key_list_shows_usage_and_state(api_as, alice, stored_key, pig_teacher):
    TeacherKey.objects.filter(pk=stored_key.pk).update(requests=12, failures=1, prompt_tokens=3400,
                                                       completion_tokens=900, last_error="429 rate limited")
    response = api_as(alice).get(KEYS)
    assert response.status_code == 200
    rows = response.data["results"]
    assert [r["id"] for r in rows] == [stored_key.pk]  # never the other domain's keys
    row = rows[0]
    assert (row["label"], row["requests"], row["failures"], row["prompt_tokens"], row["completion_tokens"]) == (
        "main", 12, 1, 3400, 900)
    assert row["disabled"] is False and row["last_error"] == "429 rate limited"
    assert row["fingerprint"] == stored_key.fingerprint
    assert "secret" not in row and "secret_encrypted" not in row
    assert_no_secret(response)


def test_owner_disables_and_renames_a_key_but_cannot_change_its_secret(api_as, alice, stored_key):
    response = api_as(alice).patch(key_url(stored_key), {"disabled": True, "label": "spare",
                                                         "secret": "sk-new-one"}, format="json")
    assert response.status_code == 200, response.data
    assert_no_secret(response)
    stored_key.refresh_from_db()
    assert stored_key.disabled is True and stored_key.label == "spare"
    assert stored_key.reveal() == SECRET
    assert api_as(alice).get(TEACHERS).data["results"][0]["key_count"] == 0  # only enabled keys count


def test_owner_deletes_a_key(api_as, alice, stored_key):
    assert api_as(alice).delete(key_url(stored_key)).status_code == 204
    assert not TeacherKey.objects.filter(pk=stored_key.pk).exists()


@pytest.mark.parametrize("payload, field", [
    ({"label": "x", "secret": SECRET}, "teacher"),
    ({"teacher": 999999, "label": "x", "secret": SECRET}, "teacher"),
    ({"label": "x"}, "secret"),
])
def test_key_create_validates(api_as, alice, teacher, payload, field):
    payload = {**payload}
    if payload.get("teacher") is None and field != "teacher":
        payload["teacher"] = teacher.pk
    response = api_as(alice).post(KEYS, payload, format="json")
    assert response.status_code == 400 and field in response.data
    assert_no_secret(response)
    assert not TeacherKey.objects.exists()


def test_blank_secret_is_400(api_as, alice, teacher):
    response = api_as(alice).post(KEYS, {"teacher": teacher.pk, "label": "x", "secret": "   "}, format="json")
    assert response.status_code == 400
    assert not TeacherKey.objects.exists()


def test_a_key_cannot_be_stored_for_another_domains_teacher(api_as, alice, domain, pig_teacher):
    response = api_as(alice).post(KEYS, {"teacher": pig_teacher.pk, "label": "x", "secret": SECRET}, format="json")
    assert response.status_code == 400 and "teacher" in response.data
    assert TeacherKey.objects.filter(teacher=pig_teacher).count() == 1


@pytest.mark.parametrize("who", ["expert", "viewer"])
def test_keys_are_owner_only(api_as, users, teacher, stored_key, who):
    client = api_as(users[who])
    assert client.get(KEYS).status_code == 403
    assert client.get(key_url(stored_key)).status_code == 403
    assert client.post(KEYS, {"teacher": teacher.pk, "label": "x", "secret": SECRET}, format="json").status_code == 403
    assert client.patch(key_url(stored_key), {"disabled": True}, format="json").status_code == 403
    assert client.delete(key_url(stored_key)).status_code == 403
    assert TeacherKey.objects.filter(pk=stored_key.pk, disabled=False).exists()


@pytest.mark.parametrize("scope", ["read", "read_write"])
def test_api_keys_never_reach_teacher_keys(domain, stored_key, scope):
    client = key_client(domain, scope)
    assert client.get(KEYS).status_code == 403
    assert client.get(key_url(stored_key)).status_code == 403


def test_other_domains_key_is_404(api_as, alice, domain, pig_teacher):
    pig_key = TeacherKey.objects.get(teacher=pig_teacher)
    client = api_as(alice)
    assert client.get(key_url(pig_key)).status_code == 404
    assert client.patch(key_url(pig_key), {"disabled": True}, format="json").status_code == 404
    assert client.delete(key_url(pig_key)).status_code == 404
    assert TeacherKey.objects.filter(pk=pig_key.pk, disabled=False).exists()


def test_schema_never_offers_the_secret_in_a_response(db):
    schema = APIClient().get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    assert components["TeacherKey"]["properties"]["secret"]["writeOnly"] is True
    assert "secret" not in components["TeacherKeyUpdate"]["properties"]
    for name, component in components.items():
        props = component.get("properties", {})
        assert "secret_encrypted" not in props, name
