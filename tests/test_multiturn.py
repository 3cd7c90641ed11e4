"""Multi-turn examples: chat conversations (thumbs-up, corrections) and distilled dialogues become
pending pairs with their earlier turns, reviewed like any pair, frozen and exported as ShareGPT
conversations, imported back, and trained on every assistant turn."""
from __future__ import annotations

import json

from datasets_app import services, versions
from datasets_app.models import QADataset, QAPair
from domains.models import Job
from inference_app import serving
from inference_app.models import Conversation, Message

from .test_distill_jobs import make_chunks, run
from .training_engine.conftest import tiny_tokenizers  # noqa: F401 - the fixture is used by name


def _conversation(domain, user, turns):
    conversation = Conversation.objects.create(domain=domain, user=user, title=turns[0][0])
    answers = []
    for question, answer in turns:
        Message.objects.create(domain=domain, conversation=conversation, role="user", content=question)
        answers.append(Message.objects.create(domain=domain, conversation=conversation, role="assistant",
                                              content=answer, covered=True))
    return answers


TURNS = [("差旅住宿标准是多少？", "每晚不超过500元。"), ("那一线城市呢？", "每晚不超过800元。"),
         ("超出部分怎么办？", "超出部分自理。")]


def test_a_thumbs_up_late_in_a_conversation_makes_a_pending_multi_turn_pair(domain, vera):
    answers = _conversation(domain, vera, TURNS)
    serving.give_feedback(message=answers[0], by=vera, rating=1)  # a first answer alone is no conversation
    assert not QAPair.objects.exists()
    feedback = serving.give_feedback(message=answers[2], by=vera, rating=1)
    pair = feedback.pair
    assert pair.status == QAPair.Status.PENDING and pair.source == QAPair.Source.FEEDBACK
    assert pair.question == "超出部分怎么办？" and pair.answer == "超出部分自理。"
    assert pair.history == [list(TURNS[0]), list(TURNS[1])]
    serving.give_feedback(message=answers[2], by=vera, rating=1)  # rating again makes no second pair
    assert QAPair.objects.count() == 1


def test_a_correction_keeps_the_turns_before_it_and_failed_answers_are_left_out(domain, vera):
    answers = _conversation(domain, vera, TURNS[:2])
    Message.objects.filter(pk=answers[0].pk).update(error="the model failed")
    answers = _conversation(domain, vera, TURNS)
    feedback = serving.give_feedback(message=answers[1], by=vera, rating=-1, correction="每晚不超过700元。")
    assert feedback.pair.answer == "每晚不超过700元。" and feedback.pair.question == "那一线城市呢？"
    assert feedback.pair.history == [list(TURNS[0])]


def test_dialogues_are_distilled_reviewed_frozen_exported_and_trained_on_every_answer(domain, bob, sent, client_as):
    from training_app.engine.data import conversation_messages

    make_chunks(domain)
    dataset = QADataset.default_for(domain)
    job = run(domain, "dialogue", dataset, bob, per_chunk=3)
    assert job.status == Job.Status.SUCCEEDED, job.error
    dialogues = list(QAPair.objects.filter(dataset=dataset, rule="dialogue"))
    assert dialogues and all(p.history and p.status == QAPair.Status.PENDING for p in dialogues)
    for p in dialogues:  # every turn is about the pair's own chunk
        assert all(u and a for u, a in p.history) and p.chunk_id is not None
    # the review page shows the conversation above the question
    page = client_as(bob).get(f"/d/{domain.slug}/pairs/{dialogues[0].pk}/").content.decode()
    assert 'class="pair-history"' in page and dialogues[0].history[0][1] in page
    queue = client_as(bob).get(f"/d/{domain.slug}/review/").content.decode()
    assert f'data-turns="{len(dialogues[0].history) + 1}"' in queue

    services.bulk_review(QAPair.objects.filter(dataset=dataset), by=bob, action="approve")
    version = versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.0).version
    records = [r for r in versions.load_qa(version, "all") if r.history]
    assert len(records) == len(dialogues)
    # ShareGPT: one conversation per line, system?/user/assistant alternating, ending with the pair's answer
    lines = [json.loads(line) for line in versions.export_version(version, "sharegpt", "all").data.decode().splitlines()]
    long = [row["messages"] for row in lines if len(row["messages"]) > 2]
    assert len(long) == len(dialogues)
    for msgs in long:
        roles = [m["role"] for m in msgs]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert conversation_messages({"messages": msgs}) is not None

    # imported back into another dataset: the same conversations, pending, once
    other = QADataset.objects.create(domain=domain, name="imported")
    data = "\n".join(json.dumps({"messages": m}, ensure_ascii=False) for m in long).encode()
    outcome = services.import_file(dataset=other, by=bob, data=data, filename="chats.sharegpt.jsonl")
    assert outcome.created == len(long) and outcome.errors == []
    assert sorted(len(p.history) for p in QAPair.objects.filter(dataset=other)) == \
        sorted(len(m) // 2 - 1 for m in long)
    again = services.import_file(dataset=other, by=bob, data=data, filename="chats.sharegpt.jsonl")
    assert again.created == 0 and again.duplicates == len(long)


def test_training_rows_of_a_frozen_conversation_train_every_answer(domain, bob, tiny_tokenizers):
    from training_app.engine.data import IGNORE, encode_rows
    from training_app.models import TrainingRun
    from training_app.tasks import training_rows

    dataset = QADataset.default_for(domain)
    services.add_pair(dataset=dataset, by=bob, question=TURNS[2][0], answer=TURNS[2][1], history=TURNS[:2],
                      approve=True)
    services.add_pair(dataset=dataset, by=bob, question="报销时限？", answer="三十日内。", approve=True)
    version = versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.0).version
    run_row = TrainingRun.objects.create(domain=domain, dataset_version=version, base_model="x", config={})
    rows, _eval = training_rows(run_row)
    conversation = next(r for r in rows if r["history"])
    examples, stats = encode_rows("sft", [conversation], tiny_tokenizers["chat"], 256)
    tok = tiny_tokenizers["chat"]
    trained = tok.decode([t for t, label in zip(examples[0].input_ids, examples[0].labels) if label != IGNORE])
    assert stats.multi_turn == 1
    assert all(answer in trained for _q, answer in TURNS) and not any(q in trained for q, _a in TURNS)


def test_an_earlier_turn_without_an_answer_is_refused(domain, bob):
    import pytest
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="earlier turn"):
        services.add_pair(dataset=QADataset.default_for(domain), by=bob, question="q", answer="a",
                          history=[["only a question", ""]])
    assert not QAPair.objects.exists()
