"""The audit log: one call per thing that matters, from the service that does it.

Never a secret: callers pass names, ids and choices; ``record`` drops any value under a key that
looks like one, as a second line of defence.
"""
from __future__ import annotations

from domains.models import AuditEvent, Domain

ACTIONS = {
    "member.add", "member.role", "member.remove", "key.create", "key.revoke", "teacher_key.add",
    "pair.review", "pair.bulk_review", "model.promote", "model.demote", "export.start", "export.push", "deployment.change",
}
_SECRET_WORDS = ("secret", "password", "token", "api_key", "key_hash", "encrypted")


def _clean(data: dict) -> dict:
    return {k: v for k, v in data.items() if not any(w in k.lower() for w in _SECRET_WORDS)}


def record(*, domain: Domain | int, by, action: str, target: str = "", summary: str = "", **data) -> AuditEvent:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    user = by if by is not None and getattr(by, "is_authenticated", False) else None
    label = user.get_username() if user is not None else (str(by) if by is not None else "")
    return AuditEvent.objects.create(domain_id=domain if isinstance(domain, int) else domain.pk, actor=user,
                                     actor_label=label[:200], action=action, target=str(target)[:200],
                                     summary=str(summary)[:500], data=_clean(data))
