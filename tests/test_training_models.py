"""Model versions: numbering per domain and one active version per kind."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from training_app.models import ModelVersion


def version(domain, kind="sft"):
    return ModelVersion.objects.create(domain=domain, number=ModelVersion.next_number(domain), kind=kind,
                                       base_model="embedded:gemma3-270m")


def test_promote_keeps_one_active_version_per_kind(domain, other_domain):
    first, second, judge = version(domain), version(domain), version(domain, "judge_sft")
    theirs = version(other_domain)
    assert (first.number, second.number, theirs.number) == (1, 2, 1)
    first.promote()
    judge.promote()
    theirs.promote()
    second.promote()
    active = set(ModelVersion.objects.active().values_list("pk", flat=True))
    assert active == {second.pk, judge.pk, theirs.pk}
    second.demote()
    assert not ModelVersion.objects.for_domain(domain).filter(kind="sft", is_active=True).exists()


def test_the_database_refuses_two_active_versions_of_a_kind(domain):
    a, b = version(domain), version(domain)
    ModelVersion.objects.filter(pk=a.pk).update(is_active=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=b.pk).update(is_active=True)
