"""The one access gate: who may do what in which domain.

Every browser view, API endpoint and queryset resolves ``(domain, role)`` here. A caller
who is not a member of the domain gets 404 (the domain's existence is not revealed);
a member whose role is too low gets 403.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import Http404

from domains.models import ApiKey, Domain, Membership, Role


@dataclass(frozen=True)
class Access:
    domain: Domain
    role: Role
    api_key: ApiKey | None = None

    def can(self, role: Role | str) -> bool:
        return self.role.at_least(Role(role))

    @property
    def can_write(self) -> bool:
        return self.can(Role.EXPERT)

    @property
    def is_owner(self) -> bool:
        return self.can(Role.OWNER)


def role_of(user, domain: Domain) -> Role | None:
    if not user or not user.is_authenticated:
        return None
    role = Membership.objects.filter(domain=domain, user=user).values_list("role", flat=True).first()
    return Role(role) if role else None


def resolve(user, slug: str, *, api_key: ApiKey | None = None, min_role: Role | str = Role.VIEWER) -> Access:
    """Resolve the caller's access to the domain ``slug``; raise 404 for outsiders, 403 for too low a role."""
    if api_key is not None:
        if not api_key.is_active or api_key.domain.slug != slug:
            raise Http404("No such domain")
        access = Access(api_key.domain, api_key.role, api_key)
    else:
        membership = (
            Membership.objects.select_related("domain").filter(domain__slug=slug, user=user).first()
            if user is not None and user.is_authenticated
            else None
        )
        if membership is None:
            raise Http404("No such domain")
        access = Access(membership.domain, Role(membership.role))
    if not access.can(min_role):
        raise PermissionDenied(f"This needs the {Role(min_role).label} role in {access.domain.name}.")
    return access


def for_request(request, slug: str, min_role: Role | str = Role.VIEWER) -> Access:
    """The gate for a request: a browser session, a user token or a domain API key."""
    auth = getattr(request, "auth", None)
    api_key = auth if isinstance(auth, ApiKey) else None
    return resolve(request.user, slug, api_key=api_key, min_role=min_role)


def domains_for_request(request):
    """Domains visible to the caller (the API key's own domain, or the user's memberships)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return Domain.objects.filter(pk=auth.domain_id)
    return Domain.objects.for_user(request.user)
