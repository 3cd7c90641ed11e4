"""Review state machine, history, optimistic locking, import, encrypted keys, freezing and exports."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.exceptions import ValidationError

from datasets_app import crypto, services, versions
from datasets_app.models import (
    DatasetVersion,
    QADataset,
    QAPair,
    QAPairEvent,
    TeacherConfig,
    TeacherKey,
)


@pytest.fixture
def dataset(domain):
    return QADataset.default_for(domain)


@pytest.fixture
def pair(dataset, bob):
    return services.add_pair(dataset=dataset, by=bob, question="发票金额3000元以上需要什么？", answer="需要签订协议。")


def test_review_state_machine(pair, bob):
    approved = services.review_pair(pair, by=bob, action="approve")
    assert approved.status == QAPair.Status.APPROVED and approved.reviewed_by == bob and approved.version == 2
    with pytest.raises(services.InvalidTransition):
        services.review_pair(approved, by=bob, action="approve")
    with pytest.raises(ValidationError):
        services.review_pair(approved, by=bob, action="reject")  # a rejection needs a reason
    rejected = services.review_pair(approved, by=bob, action="reject", reason="答案不完整")
    assert rejected.status == QAPair.Status.REJECTED and rejected.reject_reason == "答案不完整"
    with pytest.raises(services.InvalidTransition):
        services.review_pair(rejected, by=bob, action="needs_edit")
    reopened = services.review_pair(rejected, by=bob, action="reopen")
    assert reopened.status == QAPair.Status.PENDING and reopened.reviewed_by is None and not reopened.reject_reason
    needs = services.review_pair(reopened, by=bob, action="needs_edit", reason="问题太笼统")
    edited = services.edit_pair(needs, by=bob, expected_version=needs.version, question="报销金额3000元以上需要什么手续？")
    assert edited.status == QAPair.Status.PENDING  # an edit answers "needs edit"
    actions = list(QAPairEvent.objects.filter(pair=pair).values_list("action", flat=True))
    assert actions == ["create", "approve", "reject", "reopen", "needs_edit", "edit"]


def test_history_keeps_who_when_before_after(pair, bob, alice):
    services.edit_pair(pair, by=alice, expected_version=1, answer="需要签订协议，并附发票。")
    event = QAPairEvent.objects.filter(pair=pair, action="edit").get()
    assert event.actor == alice and event.at is not None
    assert event.before == {"answer": "需要签订协议。"} and event.after == {"answer": "需要签订协议，并附发票。"}


def test_a_stale_edit_conflicts_and_overwrites_nothing(pair, bob, alice):
    services.edit_pair(pair, by=alice, expected_version=1, answer="alice 的答案")
    with pytest.raises(services.EditConflict) as caught:
        services.edit_pair(pair, by=bob, expected_version=1, answer="bob 的答案")
    assert caught.value.current.answer == "alice 的答案" and caught.value.current.version == 2
    assert "changed by someone else" in str(caught.value)
    pair.refresh_from_db()
    assert pair.answer == "alice 的答案"
    with pytest.raises(services.EditConflict):
        services.review_pair(pair, by=bob, action="approve", expected_version=1)


def test_an_edit_that_changes_nothing_leaves_no_trace(pair, bob):
    same = services.edit_pair(pair, by=bob, expected_version=1, question=pair.question)
    assert same.version == 1 and not QAPairEvent.objects.filter(pair=pair, action="edit").exists()
    with pytest.raises(ValidationError):
        services.edit_pair(pair, by=bob, expected_version=1, answer="  ")


def test_double_review_records_agreement(dataset, pair, bob, alice):
    dataset.double_review = True
    dataset.save()
    pair.refresh_from_db()
    first = services.review_pair(pair, by=bob, action="approve")
    assert first.agreement is None and list(versions.trainable_pairs(dataset)) == []
    second = services.review_pair(first, by=alice, action="approve")
    assert second.second_reviewed_by == alice and second.agreement is True
    assert list(versions.trainable_pairs(dataset)) == [second]
    other = services.add_pair(dataset=dataset, by=bob, question="住宿标准是多少？", answer="每人每天500元。")
    other = services.review_pair(other, by=bob, action="approve")
    other = services.review_pair(other, by=alice, action="reject", reason="标准已更新")
    assert other.agreement is False and other.status == QAPair.Status.APPROVED


def test_bulk_approve_moves_only_pending_pairs(dataset, pair, bob):
    rejected = services.add_pair(dataset=dataset, by=bob, question="q2 是什么？", answer="a2")
    services.review_pair(rejected, by=bob, action="reject", reason="无关")
    services.add_pair(dataset=dataset, by=bob, question="q3 是什么？", answer="a3")
    n = services.bulk_review(QAPair.objects.filter(dataset=dataset), by=bob, action="approve")
    assert n == 2
    assert QAPair.objects.filter(dataset=dataset, status="rejected").count() == 1


def test_assign_only_to_members(dataset, pair, bob, charlie, vera):
    assert services.assign_pairs(QAPair.objects.filter(pk=pair.pk), to=vera, by=bob) == 1
    pair.refresh_from_db()
    assert pair.assigned_to == vera
    with pytest.raises(ValidationError):
        services.assign_pairs(QAPair.objects.filter(pk=pair.pk), to=charlie, by=bob)


CSV = "question,answer,held_out\n差旅报销的期限是多久？,返回后10个工作日内。,false\n住宿标准是多少？,每人每天500元。,true\n,缺问题,false\n"


def test_import_is_idempotent_and_reports_bad_rows(dataset, bob):
    first = services.import_pairs(dataset=dataset, by=bob, data=CSV.encode(), filename="pairs.csv")
    assert first.created == 2 and first.duplicates == 0 and len(first.errors) == 1 and first.errors[0][0] == 4
    again = services.import_pairs(dataset=dataset, by=bob, data=CSV.encode(), filename="pairs.csv")
    assert again.created == 0 and again.duplicates == 2
    held = QAPair.objects.get(dataset=dataset, question="住宿标准是多少？")
    assert held.held_out and held.source == QAPair.Source.IMPORT and held.status == QAPair.Status.PENDING


def test_a_garbled_import_changes_nothing(dataset, pair, bob):
    outcome = services.import_pairs(dataset=dataset, by=bob, data=b"PK\x03\x04garbage", filename="pairs.csv")
    assert outcome.file_error and outcome.created == 0
    assert QAPair.objects.filter(dataset=dataset).count() == 1


def test_teacher_keys_are_encrypted_at_rest(domain, alice, settings):
    teacher = TeacherConfig.objects.create(domain=domain, name="ds", provider="openai", model="deepseek-chat")
    secret = "sk-live-THIS-IS-SECRET-0123456789"
    key = services.add_teacher_key(teacher=teacher, label="main", secret=secret, by=alice)
    raw = TeacherKey.objects.filter(pk=key.pk).values_list("secret_encrypted", flat=True).get()
    assert secret not in raw and secret[:10] not in raw
    assert TeacherKey.objects.get(pk=key.pk).reveal() == secret
    assert secret not in str(key) and secret not in repr(key)
    settings.SECRET_KEY = "another-secret-key-" * 3
    with pytest.raises(crypto.KeyUnreadable, match="enter the key again"):
        TeacherKey.objects.get(pk=key.pk).reveal()


def test_teacher_config_validation(domain):
    with pytest.raises(ValidationError):
        TeacherConfig(domain=domain, name="g", provider="gemini").full_clean()
    with pytest.raises(ValidationError):
        TeacherConfig(domain=domain, name="l", provider="llamacpp").full_clean()
    TeacherConfig(domain=domain, name="ok", provider="gemini", model="gemini-2.5-flash").full_clean()


# Versions ------------------------------------------------------------------------------------


def _approved(dataset, user, n=25, held=2):
    pairs = []
    for i in range(n):
        p = services.add_pair(dataset=dataset, by=user, question=f"第{i}条规定的报销上限是多少？", answer=f"{(i + 1) * 100}元。",
                              held_out=i < held, approve=True)
        pairs.append(p)
    return pairs


def test_freeze_is_immutable_and_idempotent(dataset, bob, data_dir):
    _approved(dataset, bob)
    services.add_pair(dataset=dataset, by=bob, question="未审核的问题？", answer="不会进入版本")
    out = versions.freeze_dataset(dataset=dataset, by=bob, note="first")
    version = out.version
    assert out.created and version.number == 1
    assert version.counts["qa"]["test"] == 2 and sum(version.counts["qa"].values()) == 25
    assert version.counts["qa"]["validation"] >= 1
    assert (version.path / "manifest.json").exists()
    test_split = versions.load_qa(version, "test")
    assert all(r.held_out for r in test_split) and len(test_split) == 2
    again = versions.freeze_dataset(dataset=dataset, by=bob)
    assert not again.created and again.version.pk == version.pk
    version.name = "changed"
    with pytest.raises(ValidationError):
        version.save()
    services.add_pair(dataset=dataset, by=bob, question="新增的问题是什么？", answer="新答案。", approve=True)
    second = versions.freeze_dataset(dataset=dataset, by=bob).version
    assert second.number == 2 and second.content_hash != version.content_hash
    assert len(versions.load_qa(version, "all")) == 25  # the old version still reads as it was


def test_paraphrases_stay_in_their_parents_split(dataset, bob, data_dir):
    parents = _approved(dataset, bob, n=40, held=0)
    for p in parents:
        QAPair.objects.create(domain=dataset.domain, dataset=dataset, question=p.question + "（换个问法）",
                              answer=p.answer, parent=p, source=QAPair.Source.PARAPHRASE, status="approved")
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    where = {}
    for split in ("train", "validation", "test"):
        for r in versions.load_qa(version, split):
            where.setdefault(r.group, set()).add(split)
    assert all(len(s) == 1 for s in where.values()) and len(where) == 40


def test_freezing_nothing_is_a_clear_error(dataset, bob, data_dir):
    with pytest.raises(ValueError, match="no approved pairs"):
        versions.freeze_dataset(dataset=dataset, by=bob)
    assert not DatasetVersion.objects.exists()


def _examples(dataset, pairs):
    from datasets_app.models import EntityExample, JudgeExample, RetrievalExample

    for p in pairs:
        RetrievalExample.objects.create(domain=dataset.domain, dataset=dataset, query=p.question, pair=p,
                                        positive_text="规定正文" + p.answer, negatives=[["7", "无关段落"]], score=1.0)
        JudgeExample.objects.create(domain=dataset.domain, dataset=dataset, question=p.question, passage="正文",
                                    analysis="分析", label="aligned", pair=p,
                                    messages=[{"role": "user", "content": p.question},
                                              {"role": "assistant", "content": "<think>分析</think>aligned"}])
        text = f"报销上限为{p.answer}"
        EntityExample.objects.create(domain=dataset.domain, dataset=dataset, text=text, spans=[
            {"label": "money", "start": 5, "end": len(text) - 2, "mention": text[5:len(text) - 1]}])


@pytest.mark.parametrize("fmt", list(versions.EXPORT_FORMATS))
def test_every_export_format_downloads(fmt, dataset, bob, data_dir):
    _examples(dataset, _approved(dataset, bob))
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    export = versions.export_version(version, fmt, "all")
    assert export.data and export.filename.startswith("finance-v1-all")
    if fmt == "llamafactory":
        with zipfile.ZipFile(io.BytesIO(export.data)) as zf:
            info = json.loads(zf.read("dataset_info.json"))
            for entry in info.values():
                assert entry["file_name"] in zf.namelist()
    else:
        rows = [json.loads(line) for line in export.data.decode().splitlines()]
        expected = {"st-triplets": 25, "st-scored": 50}.get(fmt, 25)  # scored: positive + its negative
        assert len(rows) == expected, fmt


def test_export_import_round_trips(dataset, bob, data_dir, domain):
    _approved(dataset, bob)
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    for fmt, name in (("qa-jsonl", "pairs.jsonl"), ("alpaca", "alpaca.json"), ("sharegpt", "sharegpt.jsonl")):
        target = QADataset.objects.create(domain=domain, name=f"copy-{fmt}")
        data = versions.export_version(version, fmt, "all").data
        outcome = services.import_pairs(dataset=target, by=bob, data=data, filename=name)
        assert outcome.created == 25 and not outcome.errors, (fmt, outcome)
        got = sorted(QAPair.objects.filter(dataset=target).values_list("question", "answer"))
        want = sorted(QAPair.objects.filter(dataset=dataset).values_list("question", "answer"))
        assert got == want, fmt
    held = QAPair.objects.filter(dataset__name="copy-qa-jsonl", held_out=True).count()
    assert held == 2  # the lossless format keeps the held-out flag


def test_unknown_format_and_missing_files_are_clear(dataset, bob, data_dir):
    import shutil

    _approved(dataset, bob, n=3, held=0)
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    with pytest.raises(ValueError, match="alpaca"):
        versions.export_version(version, "parquet")
    shutil.rmtree(version.path)
    with pytest.raises(versions.VersionFilesMissing, match="missing"):
        versions.export_version(version, "alpaca")


@pytest.mark.parametrize("fmt", ["st-pairs", "st-triplets", "st-scored", "flagembedding", "entities", "judge"])
def test_example_formats_round_trip_through_import(fmt, dataset, bob, data_dir, domain):
    from datasets_app.models import EntityExample, JudgeExample, RetrievalExample

    _examples(dataset, _approved(dataset, bob, n=6, held=0))
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    exported = versions.export_version(version, fmt, "all").data
    target = QADataset.objects.create(domain=domain, name=f"copy-{fmt}")
    outcome = services.import_file(dataset=target, by=bob, data=exported, filename=f"x-{fmt}.jsonl", fmt=fmt)
    assert not outcome.file_error and not outcome.errors, outcome
    assert services.import_file(dataset=target, by=bob, data=exported, filename="again.jsonl",
                                fmt=fmt).created == 0  # a second import adds nothing
    model = {"entities": EntityExample, "judge": JudgeExample}.get(fmt, RetrievalExample)
    assert model.objects.filter(dataset=target).count() == outcome.created > 0
    # What was imported exports again to the same rows.
    services.add_pair(dataset=target, by=bob, question="占位问题是什么？", answer="占位。", approve=True)
    again = versions.export_version(versions.freeze_dataset(dataset=target, by=bob).version, fmt, "all").data
    lines = lambda data: sorted(data.decode().splitlines())  # noqa: E731
    if fmt == "st-scored":
        assert set(lines(again)) <= set(lines(exported)) and len(lines(again)) == outcome.created
    else:
        assert lines(again) == lines(exported)


def test_import_refuses_an_unknown_format(dataset, bob):
    with pytest.raises(ValueError, match="flagembedding"):
        services.import_file(dataset=dataset, by=bob, data=b"{}", filename="x.jsonl", fmt="parquet")


def test_a_judge_row_without_a_final_label_is_refused_by_line(dataset, bob):
    good = json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "<think>看</think>\naligned"}]})
    bad = json.dumps({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "<think>aligned"}]})
    outcome = services.import_file(dataset=dataset, by=bob, data=f"{good}\n{bad}\n".encode(), filename="j.jsonl",
                                   fmt="judge")
    assert outcome.created == 1 and [line for line, _ in outcome.errors] == [2]
