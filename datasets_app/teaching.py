"""Turn a TeacherConfig row into an engine teacher, and write its key accounting back.

Keys come from the encrypted TeacherKey rows and from ``VSM_TEACHER_KEYS_<NAME>``; they are
decrypted here, handed to the engine's KeyPool as ``ApiKey`` objects (whose repr is only
an id) and never stored in job params, results, logs or messages.
"""
from __future__ import annotations

import logging

from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_noop

from datasets_app.models import TeacherConfig, TeacherKey

logger = logging.getLogger("vsm.datasets")

# Stored in English on every pair it makes; translated where it is shown (QAPair.made_by).
OFFLINE_LABEL = gettext_noop("Offline teacher (document structure)")


def key_id(key: TeacherKey) -> str:
    return f"{key.label} #{key.fingerprint}"


def teacher_keys(config: TeacherConfig):
    """Engine ApiKeys of a teacher: stored keys first, then the environment's."""
    from datasets_app.crypto import KeyUnreadable
    from datasets_app.engine.keys import ApiKey, keys_from_env
    from datasets_app.engine.teachers import TeacherError

    keys = []
    for row in config.keys.filter(disabled=False).order_by("created_at", "pk"):
        try:
            keys.append(ApiKey(key_id(row), row.reveal()))
        except KeyUnreadable as exc:
            raise TeacherError(f"Teacher {config.name}: key {key_id(row)}: {exc}") from None
    keys.extend(keys_from_env(config.name))
    return keys


def build_teacher(config: TeacherConfig | None):
    """The engine teacher for a config; None for the built-in offline teacher."""
    from datasets_app.engine.teachers import (
        GeminiTeacher,
        LlamaCppTeacher,
        OpenAICompatibleTeacher,
    )

    if config is None or config.provider == TeacherConfig.Provider.OFFLINE:
        return None
    common = dict(temperature=config.temperature, max_output_tokens=config.max_output_tokens)
    if config.provider == TeacherConfig.Provider.OPENAI:
        return OpenAICompatibleTeacher(config.base_url or None, config.model, teacher_keys(config),
                                       rpm=config.rpm, concurrency=config.concurrency, name=config.name, **common)
    if config.provider == TeacherConfig.Provider.GEMINI:
        return GeminiTeacher(config.model, teacher_keys(config), rpm=config.rpm, concurrency=config.concurrency,
                             name=config.name, **common)
    return LlamaCppTeacher(config.model_path, name=config.name, **common)


def teacher_label(config: TeacherConfig | None) -> str:
    return OFFLINE_LABEL if config is None or config.provider == TeacherConfig.Provider.OFFLINE else config.label


def record_usage(config: TeacherConfig | None, usage: dict) -> None:
    """Add a job's per-key usage (from KeyPool.usage()) to the TeacherKey counters."""
    if config is None:
        return
    rows = {key_id(k): k for k in config.keys.all()}
    now = timezone.now()
    for kid, stats in (usage.get("keys") or {}).items():
        row = rows.get(kid)
        if row is None or not stats.get("requests"):
            continue
        fields = dict(
            requests=F("requests") + int(stats.get("requests", 0)),
            failures=F("failures") + int(stats.get("failures", 0)),
            prompt_tokens=F("prompt_tokens") + int(stats.get("prompt_tokens", 0)),
            completion_tokens=F("completion_tokens") + int(stats.get("completion_tokens", 0)),
            last_used_at=now,
        )
        if stats.get("set_aside"):
            fields["last_error"] = str(stats["set_aside"])[:300]
        TeacherKey.objects.filter(pk=row.pk).update(**fields)
