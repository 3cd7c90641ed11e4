"""Workflows across models, shared by the browser views and the API (keyword-only functions)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from domains.jobs import enqueue_job
from domains.models import ApiKey, Domain, Job, Membership, Role


@transaction.atomic
def create_domain(*, owner, slug: str, name: str, description: str = "", language: str = "zh") -> Domain:
    """Create a domain with its creator as owner."""
    if Domain.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": _("A domain with this slug already exists.")})
    domain = Domain(slug=slug, name=name, description=description, language=language)
    domain.full_clean()
    domain.save()
    Membership.objects.create(domain=domain, user=owner, role=Role.OWNER)
    return domain


def find_user(identifier: str):
    """A user by username or e-mail address (case-insensitive), or ValidationError."""
    identifier = (identifier or "").strip()
    users = get_user_model().objects.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier))
    if not identifier or users.count() != 1:
        raise ValidationError({"user": _("No single user has the username or e-mail %(id)s.") % {"id": identifier}})
    return users.get()


@transaction.atomic
def add_member(*, domain: Domain, user_identifier: str, role: str) -> Membership:
    user = find_user(user_identifier)
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role %(role)s.") % {"role": role}})
    if Membership.objects.filter(domain=domain, user=user).exists():
        raise ValidationError({"user": _("%(user)s is already a member.") % {"user": user.username}})
    return Membership.objects.create(domain=domain, user=user, role=role)


def _other_owners(membership: Membership) -> bool:
    return (
        Membership.objects.filter(domain=membership.domain, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def change_role(*, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": _("Unknown role %(role)s.") % {"role": role}})
    # Lock the domain's owner rows so two concurrent demotions cannot leave it ownerless.
    list(Membership.objects.select_for_update().filter(domain=membership.domain, role=Role.OWNER))
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners(membership):
        raise ValidationError({"role": _("A domain needs at least one owner.")})
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def remove_member(*, membership: Membership) -> None:
    list(Membership.objects.select_for_update().filter(domain=membership.domain, role=Role.OWNER))
    if membership.role == Role.OWNER and not _other_owners(membership):
        raise ValidationError({"user": _("A domain needs at least one owner.")})
    membership.delete()


def issue_api_key(*, domain: Domain, name: str, scope: str, created_by) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is shown to the owner once and never stored."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": _("Give the key a name, e.g. the system that will use it.")})
    if scope not in ApiKey.Scope.values:
        raise ValidationError({"scope": _("Unknown scope %(scope)s.") % {"scope": scope}})
    return ApiKey.issue(domain=domain, name=name, scope=scope, created_by=created_by)


SELFCHECK_MAX_STEPS = 1000
SELFCHECK_MAX_STEP_SECONDS = 60.0


def start_selfcheck(*, domain: Domain, created_by, steps: int = 10, step_seconds: float = 0.5) -> Job:
    """Queue a worker check: a job of N short steps that shows the queue and progress working."""
    try:
        steps, step_seconds = int(steps), float(step_seconds)
    except (TypeError, ValueError):
        raise ValidationError({"steps": _("Steps and step seconds must be numbers.")}) from None
    if not 1 <= steps <= SELFCHECK_MAX_STEPS:
        raise ValidationError({"steps": _("Steps must be between 1 and %(max)d.") % {"max": SELFCHECK_MAX_STEPS}})
    if not 0 <= step_seconds <= SELFCHECK_MAX_STEP_SECONDS:
        raise ValidationError({"step_seconds": _("Step seconds must be between 0 and 60.")})
    return enqueue_job(
        domain=domain, kind="selfcheck", params={"steps": steps, "step_seconds": step_seconds}, created_by=created_by
    )
