"""Template helpers for the VSM pages."""
from __future__ import annotations

from django import template

from domains.models import Domain

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_domains(context) -> list[Domain]:
    """The signed-in user's domains, for the navigation bar (no settings change needed)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    return list(Domain.objects.for_user(user).only("slug", "name"))
