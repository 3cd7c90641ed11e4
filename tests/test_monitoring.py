"""Monitoring: /metrics parsed by prometheus_client's own parser after real requests, the operations
page's numbers and charts, drift signals, alerts in the log and to a webhook."""
from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from domains.jobs import enqueue_job
from inference_app import monitoring
from inference_app.models import ApiRequest, Conversation, Feedback, Message

from .test_serving import OFF_DOMAIN_Q, key_for, served  # noqa: F401 - fixture used by name
from .training_engine.conftest import tiny_models, tiny_tokenizers  # noqa: F401 - fixtures used by name


@pytest.fixture(autouse=True)
def no_alerts_sent_yet():
    from django.core.cache import cache

    cache.clear()  # the alert cool-down lives in the cache


def scrape(client, **extra) -> dict:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_after_a_few_requests(served, domain, alice, vera, api_as, client_as, client, sent):
    api = api_as()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key_for(domain, alice)}")
    assert api.post("/api/domains/finance/ask/", {"question": OFF_DOMAIN_Q}, format="json").status_code == 200
    assert api.post("/api/domains/finance/ask/", {"question": OFF_DOMAIN_Q}, format="json").status_code == 200
    assert api.post("/api/domains/finance/ask/", {"question": ""}, format="json").status_code == 400
    chat = client_as(vera)
    chat.post("/d/finance/chat/ask/", {"question": OFF_DOMAIN_Q})
    reply = Message.objects.get(role="assistant", conversation__user=vera)
    chat.post(f"/d/finance/chat/messages/{reply.pk}/feedback/", {"rating": "-1"})
    enqueue_job(domain=domain, kind="selfcheck")

    client.logout()
    samples = scrape(client)
    assert value(samples, "vsm_requests_total", domain="finance", endpoint="ask", status="200") == 2
    assert value(samples, "vsm_requests_total", domain="finance", endpoint="ask", status="400") == 1
    assert value(samples, "vsm_requests_total", domain="finance", endpoint="chat", status="200") == 1
    assert value(samples, "vsm_request_errors_total", domain="finance", endpoint="ask") == 0
    assert value(samples, "vsm_answers_not_covered_total", domain="finance", endpoint="ask") == 2
    assert value(samples, "vsm_answers_not_covered_total", domain="finance", endpoint="chat") == 1
    assert value(samples, "vsm_feedback_total", domain="finance", rating="-1") == 1
    assert value(samples, "vsm_jobs", kind="selfcheck", state="queued") == 1
    # the latency histogram: cumulative buckets ending in +Inf = count, and a sum that matches the log
    count = value(samples, "vsm_request_latency_seconds_count", domain="finance", endpoint="ask")
    assert count == 3 == value(samples, "vsm_request_latency_seconds_bucket", domain="finance", endpoint="ask",
                               le="+Inf")
    buckets = [value(samples, "vsm_request_latency_seconds_bucket", domain="finance", endpoint="ask", le=repr(b))
               for b in monitoring.LATENCY_BUCKETS]
    assert all(b is not None for b in buckets) and buckets == sorted(buckets)
    logged = sum(ApiRequest.objects.filter(endpoint="ask").values_list("latency_ms", flat=True)) / 1000
    assert value(samples, "vsm_request_latency_seconds_sum", domain="finance", endpoint="ask") == \
        pytest.approx(logged)
    # the broker's queue (the test settings' ORM broker) answered, with the job just sent
    main = monitoring.queue_names()[0]
    assert value(samples, "vsm_queue_up", queue=main) == 1
    assert value(samples, "vsm_queue_depth", queue=main) is not None


def test_metrics_show_worker_heartbeats_and_running_jobs(domain, client, monkeypatch):
    from datetime import datetime, timezone as tz

    from domains.models import Job

    class Stat:
        cluster_id, host, workers = "c1", "gpu-1", [101, 102]
        timestamp = datetime(2026, 12, 3, 12, 0, tzinfo=tz.utc)

    monkeypatch.setattr(monitoring, "_queue_state", lambda name: (3, [Stat()]))
    job = enqueue_job(domain=domain, kind="train")
    Job.objects.filter(pk=job.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(seconds=90))
    samples = scrape(client)
    main = monitoring.queue_names()[0]
    assert value(samples, "vsm_queue_depth", queue=main) == 3
    assert value(samples, "vsm_workers", cluster="c1", host="gpu-1", queue=main) == 2
    assert value(samples, "vsm_worker_heartbeat_timestamp_seconds", cluster="c1", host="gpu-1",
                 queue=main) == Stat.timestamp.timestamp()
    assert 89 <= value(samples, "vsm_running_job_heartbeat_age_seconds", kind="train") < 200
    monkeypatch.setattr(monitoring, "_queue_state", lambda name: (None, []))
    assert value(scrape(client), "vsm_queue_up", queue=main) == 0


def test_metrics_are_not_for_strangers(db, client, settings, alice):
    assert client.get("/metrics", REMOTE_ADDR="93.184.216.34").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200  # a private scraper
    client.force_login(alice)
    assert client.get("/metrics", REMOTE_ADDR="93.184.216.34").status_code == 403  # not staff
    alice.is_staff = True
    alice.save()
    assert client.get("/metrics", REMOTE_ADDR="93.184.216.34").status_code == 200
    client.logout()
    settings.VSM_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 403  # with a token set, even loopback needs it
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 405


@pytest.mark.parametrize("values,q,expected", [
    ([], 50, None), ([2.0], 99, 2.0), ([1, 2, 3, 4], 50, 2.5), ([1, 2, 3, 4, 5], 95, 4.8),
    (list(range(1, 101)), 99, 99.01), ([5, 1, 3], 0, 1), ([5, 1, 3], 100, 5),
])
def test_percentiles(values, q, expected):
    got = monitoring.percentile([float(v) for v in values], q)
    assert got == (None if expected is None else pytest.approx(expected))


def _request(domain, minutes_ago, *, ms=100, status=200, covered=True, now=None):
    row = ApiRequest.objects.create(domain=domain, endpoint="ask", status=status, latency_ms=ms, covered=covered)
    ApiRequest.objects.filter(pk=row.pk).update(created_at=now - timedelta(minutes=minutes_ago))


def _feedback(domain, user, minutes_ago, rating, now):
    conversation = Conversation.objects.create(domain=domain, user=user)
    message = Message.objects.create(domain=domain, conversation=conversation, role="assistant", content="a")
    fb = Feedback.objects.create(domain=domain, message=message, user=user, rating=rating)
    Feedback.objects.filter(pk=fb.pk).update(created_at=now - timedelta(minutes=minutes_ago))


def test_ops_report_buckets_latency_percentiles_and_rates(domain, alice):
    now = timezone.now()
    for ms in (100, 200, 300, 400, 5000):
        _request(domain, 30, ms=ms, now=now)                         # the last hour's bucket
    _request(domain, 30, ms=50, status=503, covered=None, now=now)
    _request(domain, 150, covered=False, now=now)                    # two hours ago: a refusal
    _request(domain, 60 * 30, now=now)                               # outside the 24 h window
    _feedback(domain, alice, 20, -1, now)
    _feedback(domain, alice, 25, 1, now)
    report = monitoring.ops_report(domain, "24h", now=now)
    assert len(report["rows"]) == 24 and report["totals"]["requests"] == 7
    last = report["rows"][-1]
    assert last["requests"] == 6 and last["qps"] == pytest.approx(6 / 3600)
    assert last["p50"] == pytest.approx(0.25) and last["p99"] == pytest.approx(4.77, abs=0.01)
    assert last["error_rate"] == pytest.approx(1 / 6) and last["refusal_rate"] == 0
    assert last["thumbs_down_rate"] == 0.5
    assert report["rows"][-3]["refusal_rate"] == 1.0 and report["rows"][0]["p50"] is None
    assert report["totals"]["refusal_rate"] == pytest.approx(1 / 6)


def test_ops_page_draws_the_charts_for_members_only(domain, alice, vera, charlie, client_as):
    now = timezone.now()
    for minutes in (10, 70, 130):
        _request(domain, minutes, ms=minutes * 10, covered=minutes != 70, now=now)
    page = client_as(vera).get("/d/finance/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    for chart in ("qps", "latency", "rates"):
        assert f'id="chart-{chart}"' in html
    assert html.count("<polyline") >= 5 and 'data-series="p95"' in html and 'data-signals="none"' in html
    assert '<dd data-total="requests">3</dd>' in html
    assert client_as(vera).get("/d/finance/ops/?window=7d").status_code == 200
    assert client_as(vera).get("/d/finance/ops/?window=nonsense").status_code == 200  # the default window
    assert client_as(charlie).get("/d/finance/ops/").status_code == 404


def _drifting(domain, now):
    for i in range(40):                                   # the week before: 10 % not covered
        _request(domain, 60 * 48 + i, covered=i % 10 != 0, now=now)
    for i in range(30):                                   # the last day: 50 % not covered
        _request(domain, 60 + i, covered=i % 2 == 0, now=now)


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_drift_raises_an_alert_logged_and_posted_once(domain, caplog):
    now = timezone.now()
    assert monitoring.drift(domain, now) == []
    _drifting(domain, now)
    signals = monitoring.drift(domain, now)
    assert [s.kind for s in signals] == ["not_covered"]
    assert signals[0].recent == 0.5 and signals[0].baseline == pytest.approx(0.1) and signals[0].z > 1.96

    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        with caplog.at_level(logging.WARNING, logger="vsm.alerts"):
            sent = monitoring.check_alerts(now, webhook=f"http://127.0.0.1:{server.server_port}/hook")
            again = monitoring.check_alerts(now, webhook=f"http://127.0.0.1:{server.server_port}/hook")
    finally:
        server.shutdown()
    assert [s.kind for s in sent] == ["not_covered"] and again == []  # once per cool-down
    assert any("VSM alert domain=finance kind=not_covered" in r.getMessage() for r in caplog.records)
    assert len(_Hook.received) == 1
    content_type, body = _Hook.received[0]
    assert content_type == "application/json" and body["domain"] == "finance" and body["alert"] == "not_covered"
    assert "50%" in body["text"] and body["n_recent"] == 30


def test_negative_feedback_and_errors_raise_signals_too(domain, alice):
    now = timezone.now()
    for i in range(30):
        _feedback(domain, alice, 60 * 72 + i, 1 if i % 5 else -1, now)   # the week before: 20 % down
    for i in range(25):
        _feedback(domain, alice, 30 + i, -1 if i % 5 else 1, now)        # the last day: 80 % down
    for i in range(12):
        _request(domain, 5 + i, status=500 if i < 3 else 200, now=now)  # 25 % failed in the last hour
    kinds = {s.kind: s for s in monitoring.drift(domain, now)}
    assert set(kinds) == {"negative_feedback", "error_rate"}
    assert kinds["negative_feedback"].recent == 0.8 and kinds["error_rate"].recent == 0.25


def test_a_webhook_that_is_down_is_logged_not_raised(domain, caplog):
    now = timezone.now()
    _drifting(domain, now)
    with caplog.at_level(logging.ERROR, logger="vsm.alerts"):
        sent = monitoring.check_alerts(now, webhook="http://127.0.0.1:9/hook")
    assert len(sent) == 1 and any("webhook" in r.getMessage() for r in caplog.records)


def test_the_alert_checks_are_scheduled(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="vsm-alerts")
    assert schedule.func == "inference_app.monitoring.run_alert_checks" and schedule.minutes == 5
