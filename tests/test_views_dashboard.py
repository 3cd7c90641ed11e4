"""Domain dashboard: pipeline stage cards and the work running now."""
from __future__ import annotations

import pytest
from django.urls import reverse

from domains import stages
from domains.jobs import enqueue_job
from domains.models import Job

pytestmark = pytest.mark.django_db


def url(domain):
    return reverse("domain-dashboard", args=[domain.slug])


@pytest.mark.parametrize("role", ["owner", "expert", "viewer"])
def test_members_see_the_dashboard(client_as, users, domain, role):
    response = client_as(users[role]).get(url(domain))
    assert response.status_code == 200
    assert response.context["access"].role == role
    assert "University finance" in response.content.decode()


def test_stranger_gets_404(client_as, users, domain):
    assert client_as(users["stranger"]).get(url(domain)).status_code == 404


def test_unknown_domain_is_404_like_a_foreign_one(client_as, alice, domain):
    assert client_as(alice).get("/d/no-such-domain/").status_code == 404


def test_anonymous_is_sent_to_login(client, domain):
    response = client.get(url(domain))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_stages_not_set_up_show_a_dash_not_a_number(client_as, alice, domain, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(stages, "_STAGES", {**stages._STAGES, "chat": replace(stages._STAGES["chat"], count=None,
                                                                               url_name=None)})
    response = client_as(alice).get(url(domain))
    cards = response.context["cards"]
    assert [c.key for c in cards] == ["documents", "datasets", "training", "models", "chat"]
    later = [c for c in cards if not c.is_set_up]
    assert [c.key for c in later] == ["chat"]
    assert all(c.count is None and c.url is None for c in later)
    html = response.content.decode()
    assert html.count("Not set up yet") == len(later)
    assert html.count('class="count" data-count="">—</p>') == len(later)


def test_every_stage_is_set_up_by_its_app(client_as, alice, domain):
    html = client_as(alice).get(url(domain)).content.decode()
    assert "Not set up yet" not in html and 'data-count=""' not in html


def test_chat_stage_counts_the_domains_conversations(client_as, alice, domain, other_domain):
    from inference_app.models import Conversation

    Conversation.objects.create(domain=domain, user=alice, title="报销")
    Conversation.objects.create(domain=domain, user=alice, title="差旅")
    Conversation.objects.create(domain=other_domain, title="furnace")
    card = client_as(alice).get(url(domain)).context["cards"][4]
    assert (card.key, card.count, card.url) == ("chat", 2, reverse("chat", args=["finance"]))


def test_documents_stage_counts_the_domains_documents(client_as, alice, domain, other_domain):
    from domains.models import Document

    Document.objects.create(domain=domain, filename="a.pdf", content_hash="a" * 64)
    Document.objects.create(domain=other_domain, filename="b.pdf", content_hash="b" * 64)
    card = client_as(alice).get(url(domain)).context["cards"][0]
    assert (card.key, card.count, card.url) == ("documents", 1, reverse("document-list", args=["finance"]))


def test_datasets_stage_counts_the_domains_pairs(client_as, alice, domain, other_domain):
    from datasets_app.models import QADataset
    from datasets_app.services import add_pair

    add_pair(dataset=QADataset.default_for(domain), by=alice, question="报销需要什么？", answer="发票")
    add_pair(dataset=QADataset.default_for(other_domain), by=None, question="How warm?", answer="20 °C")
    card = client_as(alice).get(url(domain)).context["cards"][1]
    assert (card.key, card.count, card.url) == ("datasets", 1, reverse("dataset-list", args=["finance"]))


def test_a_filled_stage_shows_its_count_and_link(client_as, alice, domain, monkeypatch):
    monkeypatch.setattr(stages, "_STAGES", dict(stages._STAGES))  # undone after the test
    stages.fill("documents", count=lambda d: 7 if d.slug == "finance" else 0, url_name="job-list")
    response = client_as(alice).get(url(domain))
    card = response.context["cards"][0]
    assert (card.key, card.count, card.url) == ("documents", 7, reverse("job-list", args=["finance"]))
    html = response.content.decode()
    assert 'data-count="7">7</p>' in html
    assert "Not set up yet" not in html


def test_fill_refuses_an_unknown_stage():
    with pytest.raises(KeyError):
        stages.fill("telepathy", count=lambda d: 0)


def test_running_jobs_poll_their_row(client_as, vera, domain, other_domain):
    running = enqueue_job(domain=domain, kind="selfcheck", params={"steps": 4})
    Job.objects.filter(pk=running.pk).update(status=Job.Status.RUNNING, progress_done=1, progress_total=4)
    done = enqueue_job(domain=domain, kind="selfcheck")
    Job.objects.filter(pk=done.pk).update(status=Job.Status.SUCCEEDED)
    foreign = enqueue_job(domain=other_domain, kind="selfcheck")
    response = client_as(vera).get(url(domain))
    assert [j.pk for j in response.context["active_jobs"]] == [running.pk]
    html = response.content.decode()
    assert f'id="job-{running.pk}"' in html
    assert f'hx-get="{reverse("job-list", args=["finance"])}?job={running.pk}"' in html
    assert 'hx-trigger="every 1s"' in html
    assert 'aria-valuenow="25" data-percent="25"' in html
    assert f'id="job-{done.pk}"' not in html and f'id="job-{foreign.pk}"' not in html


def test_training_and_models_stages_count_the_domains_runs_and_versions(client_as, alice, domain, other_domain):
    from training_app.models import ModelVersion, TrainingRun

    TrainingRun.objects.create(domain=domain, base_model="embedded:gemma3-270m", config={})
    TrainingRun.objects.create(domain=domain, base_model="embedded:gemma3-270m", config={})
    TrainingRun.objects.create(domain=other_domain, base_model="embedded:gemma3-270m", config={})
    ModelVersion.objects.create(domain=domain, number=1, base_model="embedded:gemma3-270m")
    ModelVersion.objects.create(domain=other_domain, number=1, base_model="embedded:gemma3-270m")
    cards = {c.key: c for c in client_as(alice).get(url(domain)).context["cards"]}
    assert (cards["training"].count, cards["training"].url) == (2, reverse("training-list", args=["finance"]))
    assert (cards["models"].count, cards["models"].url) == (1, reverse("model-list", args=["finance"]))
