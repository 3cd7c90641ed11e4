"""API: the OpenAPI schema generates cleanly, and the docs are served from our own static files."""
from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

EXPECTED_OPERATIONS = {
    ("post", "/api/auth/token/"),
    ("get", "/api/domains/"),
    ("post", "/api/domains/"),
    ("get", "/api/domains/{slug}/"),
    ("patch", "/api/domains/{slug}/"),
    ("get", "/api/domains/{slug}/members/"),
    ("post", "/api/domains/{slug}/members/"),
    ("patch", "/api/domains/{slug}/members/{id}/"),
    ("delete", "/api/domains/{slug}/members/{id}/"),
    ("get", "/api/domains/{slug}/api-keys/"),
    ("post", "/api/domains/{slug}/api-keys/"),
    ("delete", "/api/domains/{slug}/api-keys/{id}/"),
    ("post", "/api/domains/{slug}/api-keys/{id}/revoke/"),
    ("get", "/api/domains/{slug}/jobs/"),
    ("post", "/api/domains/{slug}/jobs/"),
    ("get", "/api/domains/{slug}/jobs/{id}/"),
    ("post", "/api/domains/{slug}/jobs/{id}/cancel/"),
}


@pytest.fixture
def schema(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def test_schema_lists_every_endpoint(schema):
    operations = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert EXPECTED_OPERATIONS <= operations


def test_schema_documents_all_three_ways_in(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert {"tokenAuth", "cookieAuth"} <= set(schemes)


def test_schema_never_exposes_key_hashes(schema):
    key = schema["components"]["schemas"]["ApiKey"]["properties"]
    assert "key_hash" not in key and "key" not in key
    assert "key" in schema["components"]["schemas"]["ApiKeyCreated"]["properties"]


def test_schema_generates_without_warnings_and_validates(db, tmp_path):
    # --fail-on-warn raises on any generator warning or error; --validate checks the OpenAPI 3 spec.
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/domains/{slug}/jobs/{id}/cancel/" in out.read_text()


CDN_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com", "fonts.gstatic.com")


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_docs_use_only_local_assets(db, url):
    response = APIClient().get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for host in CDN_HOSTS:
        assert host not in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, "the page loads its UI from somewhere"
    for asset in assets:
        assert not re.match(r"^(?:[a-z]+:)?//", asset), f"external asset {asset}"
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a shipped static file"
    assert "/api/schema/" in html


def test_swagger_ui_loads_the_sidecar_bundle(db):
    html = APIClient().get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
