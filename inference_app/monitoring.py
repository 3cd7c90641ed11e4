"""Monitoring: the Prometheus exposition, the operations page's series, drift signals and alerts.

Every number comes from the database (the serving request log ``ApiRequest``, chat feedback,
the ``Job`` table) or the broker, never from one process's memory: with several web processes
behind a load balancer a scrape of any of them gives the same totals, and nothing is lost when a
process restarts.

- ``/metrics`` (``metrics_view``): requests and errors per domain and endpoint, a latency
  histogram, tokens generated, "not covered" answers, feedback, jobs by kind and state, queue
  depth per broker queue, worker heartbeats (django-q2's cluster stats and the running jobs'
  own heartbeats). Open to loopback/private addresses and staff, or to anyone presenting
  ``VSM_METRICS_TOKEN`` as a bearer token when that is set.
- ``ops_report(domain)``: per time bucket QPS, P50/P95/P99 latency, error, thumbs-down and
  refusal ("not covered") rates, for the domain's operations page.
- ``drift(domain)``: a signal when the recent share of "not covered" answers or of negative
  feedback rises above the baseline window's (two-proportion z-test and a minimum rise).
- ``check_alerts()``: drift and error-rate alerts as ``vsm.alerts`` log lines and, when
  ``VSM_ALERT_WEBHOOK`` is set, a JSON POST; each alert is sent once per cool-down.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from domains.models import Domain, Job
from inference_app.models import ApiRequest, Feedback

log = logging.getLogger("vsm.alerts")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds
ERROR_STATUS = 500  # a request with this status or above is an error (4xx are the caller's)


# Prometheus ------------------------------------------------------------------------------------


class VSMCollector:
    """A prometheus_client collector that reads the totals at scrape time."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily("vsm_requests", "Serving requests (API and chat) by domain, endpoint and "
                                       "HTTP status.", labels=["domain", "endpoint", "status"])
        errors = CounterMetricFamily("vsm_request_errors", f"Serving requests that ended with status >= "
                                     f"{ERROR_STATUS}.", labels=["domain", "endpoint"])
        tokens = CounterMetricFamily("vsm_tokens_generated", "Tokens generated in answers.",
                                     labels=["domain", "endpoint"])
        uncovered = CounterMetricFamily("vsm_answers_not_covered", "Answers that said the documents do not "
                                        "cover the question.", labels=["domain", "endpoint"])
        latency = HistogramMetricFamily("vsm_request_latency_seconds", "Serving request latency.",
                                        labels=["domain", "endpoint"])
        bucket_counts = {f"le{i}": Count("id", filter=Q(latency_ms__lte=b * 1000))
                         for i, b in enumerate(LATENCY_BUCKETS)}
        per_endpoint: dict[tuple[str, str], dict] = {}
        for row in ApiRequest.objects.values("domain__slug", "endpoint", "status").order_by() \
                .annotate(n=Count("id"), tokens=Sum("tokens"), ms=Sum("latency_ms"),
                          uncovered=Count("id", filter=Q(covered=False)), **bucket_counts):
            key = (row["domain__slug"], row["endpoint"])
            requests.add_metric([*key, str(row["status"])], row["n"])
            agg = per_endpoint.setdefault(key, {"n": 0, "errors": 0, "tokens": 0, "ms": 0, "uncovered": 0,
                                                 "buckets": [0] * len(LATENCY_BUCKETS)})
            agg["n"] += row["n"]
            agg["errors"] += row["n"] if row["status"] >= ERROR_STATUS else 0
            agg["tokens"] += row["tokens"] or 0
            agg["ms"] += row["ms"] or 0
            agg["uncovered"] += row["uncovered"]
            for i in range(len(LATENCY_BUCKETS)):
                agg["buckets"][i] += row[f"le{i}"]
        for key, agg in sorted(per_endpoint.items()):
            errors.add_metric(list(key), agg["errors"])
            tokens.add_metric(list(key), agg["tokens"])
            uncovered.add_metric(list(key), agg["uncovered"])
            buckets = [(_le(b), agg["buckets"][i]) for i, b in enumerate(LATENCY_BUCKETS)] + [("+Inf", agg["n"])]
            latency.add_metric(list(key), buckets, sum_value=agg["ms"] / 1000.0)
        yield from (requests, errors, tokens, uncovered, latency)

        feedback = CounterMetricFamily("vsm_feedback", "Feedback on answers by rating (1 helpful, -1 not).",
                                       labels=["domain", "rating"])
        for row in Feedback.objects.values("domain__slug", "rating").order_by().annotate(n=Count("id")):
            feedback.add_metric([row["domain__slug"], str(row["rating"])], row["n"])
        yield feedback

        jobs = GaugeMetricFamily("vsm_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        for row in Job.objects.values("kind", "status").order_by().annotate(n=Count("id")):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs

        now = timezone.now()
        age = GaugeMetricFamily("vsm_running_job_heartbeat_age_seconds", "Seconds since the oldest heartbeat of a "
                                "running job, per kind (a large value is a stuck or dead worker).", labels=["kind"])
        oldest: dict[str, float] = {}
        for kind, beat, started in Job.objects.filter(status=Job.Status.RUNNING) \
                .values_list("kind", "heartbeat_at", "started_at"):
            seen = beat or started
            if seen is not None:
                oldest[kind] = max(oldest.get(kind, 0.0), (now - seen).total_seconds())
        for kind, seconds in sorted(oldest.items()):
            age.add_metric([kind], round(seconds, 3))
        yield age

        depth = GaugeMetricFamily("vsm_queue_depth", "Tasks waiting in a broker queue.", labels=["queue"])
        up = GaugeMetricFamily("vsm_queue_up", "1 when the broker queue answered.", labels=["queue"])
        clusters = GaugeMetricFamily("vsm_worker_heartbeat_timestamp_seconds", "Last heartbeat of each "
                                     "django-q2 worker cluster (unix time).", labels=["cluster", "host", "queue"])
        workers = GaugeMetricFamily("vsm_workers", "Worker processes of each cluster.",
                                    labels=["cluster", "host", "queue"])
        for name in queue_names():
            size, stats = _queue_state(name)
            up.add_metric([name], 0 if size is None else 1)
            if size is not None:
                depth.add_metric([name], size)
            for stat in stats:
                labels = [str(stat.cluster_id), str(getattr(stat, "host", "")), name]
                stamp = getattr(stat, "timestamp", None)
                if stamp is not None:
                    clusters.add_metric(labels, stamp.timestamp())
                workers.add_metric(labels, len(getattr(stat, "workers", []) or []))
        yield from (depth, up, clusters, workers)


def _le(bound: float) -> str:
    return repr(float(bound))


def queue_names() -> list[str]:
    names = [settings.Q_CLUSTER.get("name", "default")]
    names += [n for n in (settings.Q_CLUSTER.get("ALT_CLUSTERS") or {}) if n not in names]
    return names


def _queue_state(name: str):
    """(queue size or None when the broker did not answer, the clusters' stats)."""
    try:
        from django_q.brokers import get_broker
        from django_q.status import Stat

        broker = get_broker(list_key=name)
        size = int(broker.queue_size() or 0)
    except Exception:  # noqa: BLE001 - a broker that is down is a metric (vsm_queue_up 0), not a 500
        return None, []
    try:
        stats = list(Stat.get_all(broker=broker))
    except Exception:  # noqa: BLE001
        stats = []
    return size, stats


def exposition() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(VSMCollector())
    return generate_latest(registry)


def _may_scrape(request: HttpRequest) -> bool:
    token = getattr(settings, "VSM_METRICS_TOKEN", "")
    if token:
        import hmac

        given = request.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), token)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return address.is_loopback or address.is_private


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST

    if not _may_scrape(request):
        return HttpResponse("Forbidden: set VSM_METRICS_TOKEN and scrape with it as a bearer token.\n",
                            status=403, content_type="text/plain; charset=utf-8")
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


# The operations page ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


WINDOWS = {"1h": (timedelta(hours=1), timedelta(minutes=5)), "24h": (timedelta(hours=24), timedelta(hours=1)),
           "7d": (timedelta(days=7), timedelta(hours=6)), "30d": (timedelta(days=30), timedelta(days=1))}


def ops_report(domain: Domain, window: str = "24h", now: datetime | None = None) -> dict:
    """The domain's serving over ``window`` (one of WINDOWS), per bucket and in total."""
    span, step = WINDOWS[window]
    now = now or timezone.now()
    start = now - span
    n_buckets = math.ceil(span / step)
    buckets = [{"start": start + i * step, "requests": 0, "errors": 0, "uncovered": 0, "answered": 0,
                "latencies": [], "feedback": 0, "negative": 0} for i in range(n_buckets)]

    def slot(when) -> dict | None:
        i = int((when - start) / step)
        return buckets[i] if 0 <= i < n_buckets else None

    latencies: list[float] = []
    requests = ApiRequest.objects.for_domain(domain).filter(created_at__gte=start, created_at__lte=now)
    for created, status, ms, covered in requests.values_list("created_at", "status", "latency_ms", "covered"):
        b = slot(created)
        if b is None:
            continue
        b["requests"] += 1
        b["errors"] += status >= ERROR_STATUS
        if covered is not None:
            b["answered"] += 1
            b["uncovered"] += covered is False
        b["latencies"].append(ms / 1000.0)
        latencies.append(ms / 1000.0)
    for created, rating in Feedback.objects.for_domain(domain).filter(created_at__gte=start,
                                                   created_at__lte=now).values_list("created_at", "rating"):
        b = slot(created)
        if b is not None and rating != 0:
            b["feedback"] += 1
            b["negative"] += rating < 0
    rows = []
    for b in buckets:
        rows.append({
            "start": b["start"], "requests": b["requests"], "qps": b["requests"] / step.total_seconds(),
            "p50": percentile(b["latencies"], 50), "p95": percentile(b["latencies"], 95),
            "p99": percentile(b["latencies"], 99),
            "error_rate": _rate(b["errors"], b["requests"]), "refusal_rate": _rate(b["uncovered"], b["answered"]),
            "thumbs_down_rate": _rate(b["negative"], b["feedback"]), "feedback": b["feedback"]})
    total = sum(b["requests"] for b in buckets)
    totals = {
        "requests": total, "qps": total / span.total_seconds(),
        "p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
        "error_rate": _rate(sum(b["errors"] for b in buckets), total),
        "refusal_rate": _rate(sum(b["uncovered"] for b in buckets), sum(b["answered"] for b in buckets)),
        "thumbs_down_rate": _rate(sum(b["negative"] for b in buckets), sum(b["feedback"] for b in buckets)),
    }
    return {"window": window, "start": start, "end": now, "step_s": step.total_seconds(), "rows": rows,
            "totals": totals}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# Drift and alerts --------------------------------------------------------------------------------


@dataclass
class Signal:
    domain: str
    kind: str            # not_covered | negative_feedback | error_rate
    recent: float        # the share in the recent window
    baseline: float | None
    n_recent: int
    n_baseline: int
    z: float | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


DRIFT_RECENT = timedelta(hours=24)
DRIFT_BASELINE = timedelta(days=7)
DRIFT_MIN_RISE = 0.10    # the share must rise by at least 10 points …
DRIFT_MIN_COUNT = 20     # … over at least this many recent answers (or ratings) …
DRIFT_Z = 1.96           # … and beyond chance (two-proportion z-test, 95 %)
ERROR_ALERT_RATE = 0.05  # more than 5 % of the last hour's requests failed
ERROR_ALERT_MIN = 10


def _z(p1: float, n1: int, p2: float, n2: int) -> float | None:
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) if n1 and n2 else 0.0
    return (p1 - p2) / se if se else None


def drift(domain: Domain, now: datetime | None = None) -> list[Signal]:
    """Rising "not covered" or negative-feedback shares: the recent window against the baseline before it."""
    now = now or timezone.now()
    recent_start, base_start = now - DRIFT_RECENT, now - DRIFT_RECENT - DRIFT_BASELINE
    answered = ApiRequest.objects.for_domain(domain).filter(covered__isnull=False)
    rated = Feedback.objects.for_domain(domain).exclude(rating=0)
    signals = []
    for kind, qs, field, bad in (("not_covered", answered, "created_at", Q(covered=False)),
                                 ("negative_feedback", rated, "created_at", Q(rating__lt=0))):
        recent = qs.filter(**{f"{field}__gte": recent_start, f"{field}__lte": now}) \
            .aggregate(n=Count("id"), bad=Count("id", filter=bad))
        base = qs.filter(**{f"{field}__gte": base_start, f"{field}__lt": recent_start}) \
            .aggregate(n=Count("id"), bad=Count("id", filter=bad))
        if recent["n"] < DRIFT_MIN_COUNT or not base["n"]:
            continue
        p1, p0 = recent["bad"] / recent["n"], base["bad"] / base["n"]
        z = _z(p1, recent["n"], p0, base["n"])
        if p1 - p0 >= DRIFT_MIN_RISE and z is not None and z >= DRIFT_Z:
            what = "answers not covered by the documents" if kind == "not_covered" else "negative feedback"
            signals.append(Signal(domain.slug, kind, round(p1, 4), round(p0, 4), recent["n"], base["n"], round(z, 2),
                                  f"{what} rose to {p1:.0%} of {recent['n']} in the last 24 h "
                                  f"from {p0:.0%} of {base['n']} in the week before"))
    last_hour = ApiRequest.objects.for_domain(domain).filter(created_at__gte=now - timedelta(hours=1),
                                                              created_at__lte=now) \
        .aggregate(n=Count("id"), bad=Count("id", filter=Q(status__gte=ERROR_STATUS)))
    if last_hour["n"] >= ERROR_ALERT_MIN and last_hour["bad"] / last_hour["n"] > ERROR_ALERT_RATE:
        rate = last_hour["bad"] / last_hour["n"]
        signals.append(Signal(domain.slug, "error_rate", round(rate, 4), None, last_hour["n"], 0, None,
                              f"{rate:.0%} of {last_hour['n']} requests in the last hour failed"))
    return signals


ALERT_COOLDOWN = 3600  # seconds before the same alert of a domain is sent again


def check_alerts(now: datetime | None = None, *, webhook: str | None = None) -> list[Signal]:
    """Every domain's signals: logged, and POSTed to the webhook, once per cool-down each. Returns
    the alerts sent this time."""
    webhook = getattr(settings, "VSM_ALERT_WEBHOOK", "") if webhook is None else webhook
    sent = []
    for domain in Domain.objects.all():
        for signal in drift(domain, now):
            if not cache.add(f"vsm-alert:{signal.domain}:{signal.kind}", 1, timeout=ALERT_COOLDOWN):
                continue
            log.warning("VSM alert domain=%s kind=%s: %s", signal.domain, signal.kind, signal.message)
            if webhook:
                post_alert(webhook, signal)
            sent.append(signal)
    return sent


def post_alert(url: str, signal: Signal, timeout: float = 5.0) -> bool:
    body = json.dumps({"source": "vsm", "alert": signal.kind, "domain": signal.domain, "text": signal.message,
                       "at": int(time.time()), **{k: v for k, v in signal.to_dict().items()
                                                  if k not in ("domain", "kind", "message")}},
                      ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 - an operator's own URL
            return 200 <= response.status < 300
    except Exception as exc:  # noqa: BLE001 - a webhook that is down must not stop the checks
        log.error("VSM alert webhook %s failed: %s", url.split("?")[0], exc)
        return False


def run_alert_checks() -> int:
    """The scheduled task (every 5 minutes, see ``ensure_schedule``)."""
    return len(check_alerts())
