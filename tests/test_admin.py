"""Every model is in the admin, and its list, filters and search work."""
import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from domains.jobs import enqueue_job
from domains.models import ApiKey

PROJECT_APPS = {"domains", "datasets_app", "training_app", "inference_app"}


def test_every_project_model_is_registered():
    missing = [
        model.__name__
        for config in apps.get_app_configs() if config.name in PROJECT_APPS
        for model in config.get_models() if model not in admin.site._registry
    ]
    assert missing == []


@pytest.fixture
def admin_client_with_data(client, domain, alice):
    ApiKey.issue(domain=domain, name="crm", scope="read", created_by=alice)
    enqueue_job(domain=domain, kind="selfcheck", created_by=alice)
    root = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(root)
    return client


def test_changelists_render_with_search(admin_client_with_data):
    for config in apps.get_app_configs():
        if config.name not in PROJECT_APPS:
            continue
        for model in config.get_models():
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            assert admin_client_with_data.get(url).status_code == 200, url
            assert admin_client_with_data.get(url, {"q": "finance"}).status_code == 200, url


def test_key_hash_is_not_editable_and_keys_not_added_in_admin(admin_client_with_data):
    assert admin_client_with_data.get(reverse("admin:domains_apikey_add")).status_code == 403
    key = ApiKey.objects.get()
    page = admin_client_with_data.get(reverse("admin:domains_apikey_change", args=[key.pk])).content.decode()
    assert 'name="key_hash"' not in page


def test_hub_tokens_are_never_shown_back_nor_added_in_admin(admin_client_with_data, domain, alice):
    from training_app.hub_tasks import save_token

    credential = save_token(domain=domain, hub="huggingface", token="hf_secretTOKENvalue1234", by=alice)
    assert admin_client_with_data.get(reverse("admin:training_app_hubcredential_add")).status_code == 403
    listing = admin_client_with_data.get(reverse("admin:training_app_hubcredential_changelist")).content.decode()
    page = admin_client_with_data.get(
        reverse("admin:training_app_hubcredential_change", args=[credential.pk])).content.decode()
    assert "1234" in listing and "1234" in page  # the fingerprint identifies it
    for shown in (listing, page):
        assert "hf_secretTOKENvalue" not in shown
        assert credential.token_encrypted not in shown
        assert 'name="token_encrypted"' not in shown
