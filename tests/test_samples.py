"""The sample domains shipped in samples/: every held-out answer is backed by its document, and the
questions the documents do not answer expect exactly the engine's "not covered" reply."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference_app.engine.answering import NOT_COVERED
from training_app.engine.evaluation import extract_facts, hallucinated_facts

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
DOMAINS = {"finance": "zh", "manual": "en"}


@pytest.mark.parametrize("domain, language", sorted(DOMAINS.items()))
def test_held_out_answers_are_backed_by_their_documents(domain, language):
    rows = [json.loads(line) for line in (SAMPLES / domain / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 20 and len({r["question"] for r in rows}) == len(rows)
    unanswerable = [r for r in rows if r["source"] is None]
    assert len(unanswerable) >= 4 and all(r["answer"] == NOT_COVERED[language] for r in unanswerable)
    with_facts = 0
    for row in rows:
        if row["source"] is None:
            continue
        document = (SAMPLES / domain / row["source"]).read_text(encoding="utf-8")
        invented = hallucinated_facts(row["answer"], "", sources=[document])
        assert invented == [], f"{row['question']} → {row['answer']}: {invented} not in {row['source']}"
        with_facts += bool(extract_facts(row["answer"]))
    assert with_facts >= 10  # amounts, codes, durations: answers a metric can check
