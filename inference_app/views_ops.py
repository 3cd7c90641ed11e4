"""The per-domain operations page: traffic, latency percentiles, refusal and thumbs-down rates over
time (SVG line charts), and the drift signals that alerts are raised from."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from domains import access as gate
from inference_app import monitoring
from training_app.views import _tick_label, _ticks


def line_chart(rows: list[dict], series: list[tuple[str, str, str]], *, width: int = 640, height: int = 200,
               percent: bool = False) -> dict | None:
    """Geometry of a time-series chart: one polyline per ``(key, label, css class)`` over the rows
    (a row whose value is None breaks the line). None when no row has a value."""
    values = [r[k] for r in rows for k, _l, _c in series if r.get(k) is not None]
    if not values:
        return None
    left, right, top, bottom = 56, 16, 12, 34
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    hi = max(values)
    hi = 1.0 if percent and hi <= 1.0 else (hi * 1.1 or 1.0)
    n = max(len(rows) - 1, 1)

    def px(i):
        return round(x0 + i / n * (x1 - x0), 2)

    def py(v):
        return round(y1 - v / hi * (y1 - y0), 2)

    lines = []
    for key, label, css in series:
        segments, current = [], []
        for i, r in enumerate(rows):
            if r.get(key) is None:
                if current:
                    segments.append(current)
                current = []
                continue
            current.append(f"{px(i)},{py(r[key])}")
        if current:
            segments.append(current)
        dots = [{"x": px(i), "y": py(r[key]), "value": r[key], "at": r["start"]} for i, r in enumerate(rows)
                if r.get(key) is not None]
        lines.append({"key": key, "label": label, "css": css, "segments": [" ".join(s) for s in segments],
                      "dots": dots if len(dots) <= 60 else []})
    y_ticks = [{"y": py(t), "label": f"{t:.0%}" if percent else _tick_label(t)} for t in _ticks(0, hi, 4) if t <= hi]
    local = [timezone.localtime(r["start"]) for r in rows]
    every = max(1, len(rows) // 6)
    fmt = "%m-%d" if len(rows) > 1 and (rows[-1]["start"] - rows[0]["start"]).days >= 2 else "%H:%M"
    x_ticks = [{"x": px(i), "label": local[i].strftime(fmt)} for i in range(0, len(rows), every)]
    return {"width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1, "lines": lines,
            "x_ticks": x_ticks, "y_ticks": y_ticks}


@login_required
@require_safe
def ops_page(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug)
    window = request.GET.get("window") or "24h"
    if window not in monitoring.WINDOWS:
        window = "24h"
    report = monitoring.ops_report(access.domain, window)
    rows = report["rows"]
    charts = [
        {"id": "qps", "title": _("Requests per second"),
         "plot": line_chart(rows, [("qps", _("QPS"), "s-qps")])},
        {"id": "latency", "title": _("Latency (seconds)"),
         "plot": line_chart(rows, [("p50", "P50", "s-p50"), ("p95", "P95", "s-p95"), ("p99", "P99", "s-p99")])},
        {"id": "rates", "title": _("Refusal, thumbs-down and error rates"),
         "plot": line_chart(rows, [("refusal_rate", _("not covered"), "s-refusal"),
                                   ("thumbs_down_rate", _("thumbs down"), "s-down"),
                                   ("error_rate", _("errors"), "s-error")], percent=True)},
    ]
    context = {"access": access, "domain": access.domain, "section": "ops", "report": report,
               "totals": report["totals"], "charts": charts, "windows": list(monitoring.WINDOWS),
               "window": window, "signals": monitoring.drift(access.domain)}
    return render(request, "inference/ops.html", context)
