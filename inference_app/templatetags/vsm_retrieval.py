"""Small template helpers of the retrieval pages: fusion weights in words, metric cells with bars."""
from __future__ import annotations

import math

from django import template
from django.utils.html import format_html
from django.utils.translation import gettext as _

register = template.Library()


def _value(row, key):
    value = row.get(key) if isinstance(row, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@register.simple_tag
def fusion_label(weights) -> str:
    """'BM25 only', 'dense only' or 'BM25 × 1 + dense × 0.5 (RRF k 60)'."""
    if not isinstance(weights, dict) or not weights:
        return _("BM25 only")
    bm25, dense = _value(weights, "bm25") or 0.0, _value(weights, "dense") or 0.0
    if dense == 0:
        return _("BM25 only")
    if bm25 == 0:
        return _("dense only")
    return _("BM25 × %(b)s + dense × %(d)s (RRF k %(k)s)") % {
        "b": f"{bm25:g}", "d": f"{dense:g}", "k": weights.get("rrf_k", 60)}


@register.simple_tag
def metric(row, key) -> str:
    value = _value(row, key)
    return "" if value is None else f"{value:.3f}"


@register.simple_tag
def metric_bar(row, key):
    """The value with a bar behind it (0–1), so a table of models reads like a chart."""
    value = _value(row, key)
    if value is None:
        return ""
    width = max(0.0, min(1.0, value)) * 100
    return format_html('<span class="bar" style="width:{}%" aria-hidden="true"></span><span class="bar-value">{}</span>',
                       f"{width:.1f}", f"{value:.3f}")


@register.filter
def get_item(mapping, key):
    """``mapping|get_item:key`` for dicts keyed by a variable (results per configuration)."""
    return mapping.get(key) if isinstance(mapping, dict) else None
