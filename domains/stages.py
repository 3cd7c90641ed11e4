"""The pipeline stages shown as cards on a domain's dashboard.

The dashboard knows the shape of the pipeline (documents → datasets → training → models →
chat) but not the apps that implement each stage. An app fills its stage once, from its
``AppConfig.ready()``::

    from domains import stages

    stages.fill(
        "documents",
        count=lambda domain: Document.objects.for_domain(domain).count(),
        url_name="document-list",  # reversed with the domain's slug
    )

Until a stage is filled, its card shows "—" and a "not set up yet" hint instead of a number:
the dashboard never invents counts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from domains.models import Domain


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline; ``count`` and ``url_name`` stay None until an app fills them."""

    key: str
    label: Any
    description: Any
    count: Callable[[Domain], int] | None = None
    url_name: str | None = None

    @property
    def is_set_up(self) -> bool:
        return self.count is not None


@dataclass(frozen=True)
class StageCard:
    """What the dashboard renders for one stage of one domain."""

    key: str
    label: Any
    description: Any
    count: int | None
    url: str | None

    @property
    def is_set_up(self) -> bool:
        return self.count is not None


_STAGES: dict[str, Stage] = {
    stage.key: stage
    for stage in [
        Stage("documents", _("Documents"), _("Upload manuals, rules and handbooks; they are split into chunks.")),
        Stage("datasets", _("Datasets"), _("Question–answer pairs drawn from the documents, reviewed by experts.")),
        Stage("training", _("Training"), _("Training runs that teach a small model the reviewed dataset.")),
        Stage("models", _("Models"), _("Trained model versions, evaluated against their base model.")),
        Stage("chat", _("Chat"), _("Conversations with the active model, answered from the documents with "
                                   "citations.")),
    ]
}


def fill(key: str, *, count: Callable[[Domain], int], url_name: str | None = None) -> None:
    """Let the app that implements stage ``key`` give its count and its page (a URL name taking the slug)."""
    if key not in _STAGES:
        raise KeyError(f"unknown pipeline stage {key!r}; known: {', '.join(_STAGES)}")
    _STAGES[key] = replace(_STAGES[key], count=count, url_name=url_name)


def stages() -> list[Stage]:
    """The stages in pipeline order."""
    return list(_STAGES.values())


def cards_for(domain: Domain) -> list[StageCard]:
    """The dashboard cards of one domain, counted now."""
    cards = []
    for stage in _STAGES.values():
        count = stage.count(domain) if stage.count is not None else None
        url = reverse(stage.url_name, args=[domain.slug]) if stage.url_name else None
        cards.append(StageCard(stage.key, stage.label, stage.description, count, url))
    return cards
