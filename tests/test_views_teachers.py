"""Teacher pages: members see teachers, owners manage them and their keys; a key is never shown back."""
from __future__ import annotations

import pytest
from django.urls import reverse

from datasets_app.models import TeacherConfig, TeacherKey
from datasets_app.services import add_teacher_key

pytestmark = pytest.mark.django_db

SECRET = "sk-live-7f3a9c0d1e2b4a5f6e7d8c9b0a1f2e3d"


@pytest.fixture
def teacher(domain, alice):
    return TeacherConfig.objects.create(domain=domain, name="deepseek", provider="openai", model="deepseek-chat",
                                        base_url="https://api.deepseek.com/v1", created_by=alice)


@pytest.fixture
def pig_teacher(other_domain):
    teacher = TeacherConfig.objects.create(domain=other_domain, name="gem", provider="gemini", model="gemini-2.5-flash")
    add_teacher_key(teacher=teacher, label="pig key", secret="AIzaPigsSecret0123456789", by=None)
    return teacher


def list_url():
    return reverse("teacher-list", args=["finance"])


def edit_url(teacher, slug="finance"):
    return reverse("teacher-edit", args=[slug, teacher.pk])


def teacher_data(**over):
    data = {"name": "qwen", "provider": "openai", "model": "qwen-plus",
            "base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1", "model_path": "", "temperature": 0.3,
            "concurrency": 4, "rpm": "", "max_output_tokens": 2048}
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def test_viewer_sees_teachers_but_no_keys_and_no_forms(client_as, vera, teacher):
    key = add_teacher_key(teacher=teacher, label="team-a", secret=SECRET, by=None)
    response = client_as(vera).get(list_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "deepseek" in html and "deepseek-chat" in html
    assert "Offline teacher" in html and "needs no key" in html
    assert key.fingerprint not in html and "team-a" not in html and SECRET not in html
    assert 'id="teacher-form"' not in html and edit_url(teacher) not in html
    assert client_as(vera).get(edit_url(teacher)).status_code == 403


def test_owner_adds_a_teacher_and_makes_it_the_default(client_as, alice, domain, teacher):
    teacher.is_default = True
    teacher.save()
    response = client_as(alice).post(reverse("teacher-create", args=["finance"]), teacher_data(is_default="on"))
    qwen = TeacherConfig.objects.get(domain=domain, name="qwen")
    assert response.status_code == 302 and response["Location"] == edit_url(qwen)
    assert qwen.created_by == alice and qwen.is_default
    teacher.refresh_from_db()
    assert not teacher.is_default  # one default per domain (services.set_default_teacher)


def test_model_validation_errors_are_shown_on_the_form(client_as, alice, domain, teacher):
    client = client_as(alice)
    response = client.post(reverse("teacher-create", args=["finance"]),
                           teacher_data(name="gem", provider="gemini", model="", base_url=""))
    assert response.status_code == 200
    assert "A Gemini teacher needs a model name" in response.content.decode()
    response = client.post(reverse("teacher-create", args=["finance"]), teacher_data(name="deepseek"))
    assert "already has a teacher of that name" in response.content.decode()
    response = client.post(reverse("teacher-create", args=["finance"]), teacher_data(name="x", temperature=5))
    assert response.context["form"].errors["temperature"]
    assert set(TeacherConfig.objects.values_list("name", flat=True)) == {"deepseek"}


def test_owner_edits_a_teacher(client_as, alice, teacher):
    client = client_as(alice)
    assert client.get(edit_url(teacher)).status_code == 200
    response = client.post(edit_url(teacher), teacher_data(name="deepseek", model="deepseek-reasoner", rpm=60,
                                                           concurrency=8, is_default="on"))
    assert response.status_code == 302
    teacher.refresh_from_db()
    assert (teacher.model, teacher.rpm, teacher.concurrency, teacher.is_default) == ("deepseek-reasoner", 60, 8, True)
    response = client.post(edit_url(teacher), teacher_data(name="deepseek", provider="llamacpp", model_path=""))
    assert response.status_code == 200 and "needs the path of a .gguf file" in response.content.decode()
    teacher.refresh_from_db()
    assert teacher.provider == "openai"


def test_a_stored_key_is_never_shown_back(client_as, alice, teacher):
    client = client_as(alice)
    response = client.post(reverse("teacher-key-add", args=["finance", teacher.pk]),
                           {"label": "team-a", "secret": SECRET}, follow=True)
    key = TeacherKey.objects.get()
    assert key.reveal() == SECRET and SECRET not in key.secret_encrypted
    bodies = [response.content.decode()]
    for page in (edit_url(teacher), list_url(), reverse("dataset-list", args=["finance"])):
        bodies.append(client.get(page).content.decode())
    assert all(SECRET not in body and SECRET[:12] not in body for body in bodies)
    assert "team-a" in bodies[0] and f"#{key.fingerprint}" in bodies[0]
    assert teacher.env_var in bodies[0]  # keys may also come from VSM_TEACHER_KEYS_DEEPSEEK


def test_a_refused_key_form_does_not_echo_the_secret(client_as, alice, teacher):
    long_label = "x" * 200  # over the label's limit: the form fails with the secret posted
    response = client_as(alice).post(reverse("teacher-key-add", args=["finance", teacher.pk]),
                                     {"label": long_label, "secret": SECRET})
    assert response.status_code == 200 and response.context["key_form"].errors
    assert SECRET not in response.content.decode()
    response = client_as(alice).post(reverse("teacher-key-add", args=["finance", teacher.pk]),
                                     {"label": "empty", "secret": "   "})
    assert response.context["key_form"].errors["secret"]
    assert not TeacherKey.objects.exists()


def test_key_usage_counters_are_shown(client_as, alice, teacher):
    key = add_teacher_key(teacher=teacher, label="team-b", secret=SECRET, by=alice)
    TeacherKey.objects.filter(pk=key.pk).update(requests=42, failures=3, prompt_tokens=12345, completion_tokens=678,
                                                last_error="429 quota exceeded", disabled=True)
    html = client_as(alice).get(edit_url(teacher)).content.decode()
    for text in ("42", "12345 / 678", "429 quota exceeded", "disabled"):
        assert text in html


def test_owner_deletes_a_key_and_a_teacher(client_as, alice, teacher):
    key = add_teacher_key(teacher=teacher, label="team-a", secret=SECRET, by=alice)
    client = client_as(alice)
    response = client.post(reverse("teacher-key-delete", args=["finance", key.pk]))
    assert response.status_code == 302 and not TeacherKey.objects.exists()
    response = client.post(reverse("teacher-delete", args=["finance", teacher.pk]))
    assert response.status_code == 302 and not TeacherConfig.objects.exists()


def test_experts_and_viewers_cannot_manage(client_as, bob, vera, teacher):
    key = add_teacher_key(teacher=teacher, label="team-a", secret=SECRET, by=None)
    for user in (bob, vera):
        client = client_as(user)
        assert client.post(reverse("teacher-create", args=["finance"]), teacher_data()).status_code == 403
        assert client.post(edit_url(teacher), teacher_data(name="deepseek", model="x")).status_code == 403
        assert client.post(reverse("teacher-key-add", args=["finance", teacher.pk]),
                           {"label": "mine", "secret": "sk-mine-000000000000"}).status_code == 403
        assert client.post(reverse("teacher-key-delete", args=["finance", key.pk])).status_code == 403
        assert client.post(reverse("teacher-delete", args=["finance", teacher.pk])).status_code == 403
    assert list(TeacherConfig.objects.values_list("name", "model")) == [("deepseek", "deepseek-chat")]
    assert list(TeacherKey.objects.values_list("label", flat=True)) == ["team-a"]
    assert client_as(bob).get(list_url()).status_code == 200


def test_other_tenant_teachers_and_keys_are_404(client_as, alice, teacher, pig_teacher):
    client = client_as(alice)
    pig_key = pig_teacher.keys.get()
    assert client.get(edit_url(pig_teacher)).status_code == 404
    assert client.get(edit_url(pig_teacher, slug="pigs")).status_code == 404
    assert client.post(edit_url(pig_teacher), teacher_data(name="gem", provider="gemini", model="m")).status_code == 404
    assert client.post(reverse("teacher-key-add", args=["finance", pig_teacher.pk]),
                       {"label": "x", "secret": SECRET}).status_code == 404
    assert client.post(reverse("teacher-key-delete", args=["finance", pig_key.pk])).status_code == 404
    assert client.post(reverse("teacher-delete", args=["finance", pig_teacher.pk])).status_code == 404
    listing = client.get(list_url())
    assert [t.name for t in listing.context["teachers"]] == ["deepseek"]
    assert "pig key" not in listing.content.decode() and pig_key.fingerprint not in listing.content.decode()
    assert TeacherKey.objects.filter(teacher=pig_teacher).count() == 1 and TeacherConfig.objects.count() == 2
