"""Schemathesis against VSM's own OpenAPI schema: every operation with generated parameters and
bodies, as a read/write key of a domain with data, never answers 5xx."""
from __future__ import annotations

import pytest
from django.db import transaction
import schemathesis
from hypothesis import HealthCheck, given, settings

from domains.models import ApiKey


@pytest.fixture
def api_schema(db, settings):
    """The app in-process, as Django's test client runs it: the test's transaction stays open."""
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def key_of_finance(domain, alice):
    from datasets_app.models import QADataset
    from datasets_app.services import add_pair

    add_pair(dataset=QADataset.default_for(domain), by=alice, question="报销需要什么？", answer="发票。")
    _key, secret = ApiKey.issue(domain=domain, name="fuzz", scope="read_write", created_by=alice)
    return secret


FUZZ = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_no_operation_answers_5xx(api_schema, key_of_finance, sent, data_dir):
    """One hypothesis run per operation (schemathesis' pytest plugin does not run on pytest 9 yet)."""
    failures, operations = [], 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case):
            if "slug" in (case.path_parameters or {}):
                case.path_parameters["slug"] = "finance"  # the domain's own data, not just the gate's 404
            with transaction.atomic():  # each case starts from the fixture's data
                response = case.call(headers={"Authorization": f"Bearer {key_of_finance}"})
                transaction.set_rollback(True)
            # 503 is the serving API's "not available yet" (no index, no model), with the reason
            if response.status_code >= 500 and not (response.status_code == 503 and "detail" in response.text):
                failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}")

        check()
    assert operations >= 60  # the whole API was walked
    assert failures == []
