"""Chat rendering: [n] markers as links to their citation, evidence highlighted in a quote."""
from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()

_MARKER = re.compile(r"[\[【]\s*(\d{1,3}(?:\s*[,，、;；]\s*\d{1,3})*)\s*[\]】]")


@register.simple_tag(takes_context=True)
def cite_markers(context, text: str, citations) -> str:
    """The answer, escaped, with line breaks, and each [n] that names a citation a link to it."""
    message = context.get("m")
    ranks = {int(c.get("rank", 0)) for c in citations or []}
    out, last = [], 0
    text = text or ""
    for match in _MARKER.finditer(text):
        out.append(escape(text[last:match.start()]))
        numbers = [int(n) for n in re.split(r"\s*[,，、;；]\s*", match.group(1))]
        if message is not None and all(n in ranks for n in numbers):
            links = ",".join(f'<a href="#m{message.pk}-c{n}" class="cite">{n}</a>' for n in numbers)
            out.append(f"<sup>[{links}]</sup>")
        else:
            out.append(escape(match.group(0)))
        last = match.end()
    out.append(escape(text[last:]))
    return mark_safe("".join(out).replace("\n", "<br>"))


@register.simple_tag
def highlight(quote: str, spans) -> str:
    """``quote`` escaped, with the (start, end) ``spans`` wrapped in <mark>."""
    quote = quote or ""
    out, last = [], 0
    for start, end in sorted((int(s), int(e)) for s, e in spans or () if 0 <= int(s) < int(e) <= len(quote)):
        if start < last:
            continue
        out.append(escape(quote[last:start]))
        out.append(f"<mark>{escape(quote[start:end])}</mark>")
        last = end
    out.append(escape(quote[last:]))
    return mark_safe("".join(out))


@register.simple_tag
def feedback_url(place, message) -> str:
    return place.url("message-feedback", message.pk)


@register.filter
def my_feedback(message, place):
    """This caller's feedback on the message (a member's, or the public visitor's), or None."""
    rows = list(message.feedback.all())
    if place.access is not None:
        user_id = place.request.user.pk
        return next((f for f in rows if f.user_id == user_id), None)
    return next((f for f in rows if f.user_id is None), None)
