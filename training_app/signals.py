"""Signals other apps listen to, so the training app need not know them."""
from django.dispatch import Signal

# Sent after a domain's active model of one kind changed (a version promoted or demoted),
# with ``domain_id``, ``kind`` and ``version`` (the promoted or demoted ModelVersion). The
# retrieval index rebuilds its dense part when the active embedding model changes.
active_model_changed = Signal()
