"""Signals other apps listen to, so the domains app need not know them."""
from django.dispatch import Signal

# Sent before a document's chunks are deleted (document removed, or re-chunked/re-ingested),
# with ``document`` and ``chunk_ids``. Datasets built from those chunks mark themselves stale;
# reviewed QA pairs are kept (their chunk link is cleared, never the pair).
chunks_removed = Signal()

# Sent inside the transaction that wrote a document's new chunks (ingest, re-chunk), with
# ``document`` and ``chunk_ids``. The retrieval index marks itself stale and rebuilds.
chunks_added = Signal()
