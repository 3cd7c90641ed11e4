"""Evaluation end to end on a tiny model, the promotion gate, blind expert scoring, reports and the API."""
from __future__ import annotations

import csv
import io
import shutil

import pytest
from django.core.exceptions import ValidationError

from datasets_app import services as dataset_services
from datasets_app import versions
from datasets_app.models import QADataset
from domains.jobs import enqueue_job, run_job
from domains.models import Job
from inference_app import services as retrieval
from inference_app.models import RetrievalIndex
from training_app import scoring
from training_app.evaluation_tasks import start_evaluation
from training_app.models import EvalItem, EvaluationRun, ExpertScore, ModelVersion, Promotion, PromotionPolicy
from training_app.promotion import gate_for, promote_version

from .test_distill_jobs import ARTICLES, make_chunks
from .training_engine.conftest import tiny_models, tiny_tokenizers  # noqa: F401 - fixtures used by name

NOT_COVERED = "文档中没有涉及这个问题。"


@pytest.fixture
def evalset(domain, bob, data_dir, tiny_models, sent):  # noqa: F811
    """Five articles as chunks, a pair per article (two held out) and one held-out question they do not answer,
    a BM25 index, and a 'fine-tuned' version that is the tiny Qwen copied into the data folder."""
    _doc, chunks = make_chunks(domain)
    dataset = QADataset.default_for(domain)
    questions = ["多少金额需要签订协议？", "多少金额必须签订合同？", "出差后几天内报销？", "住宿费标准是多少？",
                 "本办法由谁解释？"]
    answers = ["3000元及以上需要签订协议。", "10000元及以上必须签订合同。", "返回后10个工作日内。", "每人每天500元。",
               "由财务处负责解释。"]
    for i, (chunk, q, a) in enumerate(zip(chunks, questions, answers)):
        dataset_services.add_pair(dataset=dataset, by=bob, question=q, answer=a, chunk=chunk, approve=True,
                                  held_out=i in (0, 3))
    dataset_services.add_pair(dataset=dataset, by=bob, question="食堂几点开门？", answer=NOT_COVERED, approve=True,
                              held_out=True)
    version = versions.freeze_dataset(dataset=dataset, by=bob).version
    RetrievalIndex.objects.create(domain=domain, dense_enabled=False)
    run_job(retrieval.start_index_build(domain=domain).pk)
    folder = data_dir / "domains" / domain.slug / "runs" / "1" / "model"
    shutil.copytree(tiny_models["qwen"], folder)
    model = ModelVersion.objects.create(domain=domain, number=1, kind="sft", base_model="tiny",
                                        base_path=tiny_models["qwen"], adapter_path=str(folder.relative_to(data_dir)),
                                        dataset_hash=version.content_hash)
    return {"version": version, "model": model}


def evaluate(domain, bob, evalset, **kwargs) -> EvaluationRun:
    run = start_evaluation(domain=domain, model_version=evalset["model"], dataset_version=None, by=bob,
                           options={"max_new_tokens": 12, **kwargs.pop("options", {})}, **kwargs)
    run_job(run.job.pk)
    return EvaluationRun.objects.get(pk=run.pk)


def test_every_configuration_answers_the_held_out_questions_and_is_scored(domain, bob, evalset):
    run = evaluate(domain, bob, evalset)
    assert run.job.status == Job.Status.SUCCEEDED, run.job.error + run.job.log_tail
    assert run.dataset_version == evalset["version"]  # the version the model was trained on
    assert set(run.results) == {"base", "model", "base_rag", "model_rag", "extractive"}
    assert EvalItem.objects.filter(run=run).count() == 5 * 3  # three held-out questions per configuration
    for result in run.results.values():
        assert result["items"] == 3 and result["answerable"] == 2 and result["unanswerable"] == 1
        assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["hallucination_rate"] <= 1.0
    extractive = EvalItem.objects.filter(run=run, configuration="extractive").order_by("position")
    hotel = next(i for i in extractive if "住宿" in i.question)
    assert "500元" in hotel.answer and hotel.metrics["key_fact_recall"] == 1.0 and hotel.citations
    assert hotel.metrics["context_recall"] == 1.0  # the gold chunk was retrieved
    assert not next(i for i in extractive if "食堂" in i.question).answerable
    assert EvalItem.objects.filter(run=run, configuration="model").first().metrics["context_recall"] is None
    assert set(run.probe) >= {"base", "model"} and 0.0 <= run.probe["model"] <= 1.0


def test_a_retried_evaluation_continues_and_writes_nothing_twice(domain, bob, evalset):
    run = evaluate(domain, bob, evalset, configurations=["extractive", "base_rag"], options={"probe": False})
    kept = set(EvalItem.objects.filter(run=run, configuration="extractive").values_list("pk", flat=True))
    EvalItem.objects.filter(run=run, configuration="base_rag", position__gt=0).delete()  # as if the worker died
    retry = enqueue_job(domain=domain, kind="evaluate", params={"evaluation_id": run.pk})
    run_job(retry.pk)
    assert Job.objects.get(pk=retry.pk).status == Job.Status.SUCCEEDED
    assert set(EvalItem.objects.filter(run=run, configuration="extractive").values_list("pk", flat=True)) == kept
    assert EvalItem.objects.filter(run=run, configuration="base_rag").count() == 3
    assert EvaluationRun.objects.get(pk=run.pk).probe == {}


def test_evaluations_refuse_what_cannot_work(domain, bob, evalset, sent):
    RetrievalIndex.objects.filter(domain=domain).update(built_at=None)
    with pytest.raises(ValidationError, match="index"):
        start_evaluation(domain=domain, model_version=evalset["model"], dataset_version=None, by=bob,
                         configurations=["model_rag"])
    with pytest.raises(ValidationError, match="Choose among"):
        start_evaluation(domain=domain, model_version=evalset["model"], dataset_version=None, by=bob,
                         configurations=["magic"])
    embedding = ModelVersion.objects.create(domain=domain, number=2, kind="embedding", base_model="x")
    with pytest.raises(ValidationError, match="measured when they are trained"):
        start_evaluation(domain=domain, model_version=embedding, dataset_version=None, by=bob)
    assert not EvaluationRun.objects.exists()


# The promotion gate --------------------------------------------------------------------------


def finished(domain, model, version, results, probe=None) -> EvaluationRun:
    job = Job.objects.create(domain=domain, kind="evaluate", status=Job.Status.SUCCEEDED)
    return EvaluationRun.objects.create(domain=domain, model_version=model, dataset_version=version,
                                        configurations=list(results), results=results, probe=probe or {}, job=job)


def test_the_gate_refuses_a_version_that_regresses_and_records_a_forced_promotion(domain, alice, evalset):
    version, v1 = evalset["version"], evalset["model"]
    v2 = ModelVersion.objects.create(domain=domain, number=2, kind="sft", base_model="tiny")
    finished(domain, v1, version, {"model_rag": {"accuracy": 0.8, "key_fact_recall": 0.9, "hallucination_rate": 0.1},
                                   "base_rag": {"accuracy": 0.5, "key_fact_recall": 0.6, "hallucination_rate": 0.2}})
    assert gate_for(v1).allowed  # better than its base model, and nothing is active yet
    promote_version(version=v1, by=alice)
    finished(domain, v2, version, {"model_rag": {"accuracy": 0.6, "key_fact_recall": 0.95, "hallucination_rate": 0.3}})
    gate = gate_for(v2)
    assert not gate.allowed and gate.baseline == "active v1"
    assert {r["metric"]: r["ok"] for r in gate.rows} == {"accuracy": False, "key_fact_recall": True,
                                                         "hallucination_rate": False}
    with pytest.raises(ValidationError, match="accuracy 0.600 is worse than active v1"):
        promote_version(version=v2, by=alice)
    with pytest.raises(ValidationError, match="needs a reason"):
        promote_version(version=v2, by=alice, force=True)
    assert ModelVersion.objects.get(is_active=True) == v1
    forced = promote_version(version=v2, by=alice, force=True, reason="the pilot needs the new clauses")
    assert forced.forced and forced.previous == v1 and forced.gate["allowed"] is False
    assert ModelVersion.objects.get(is_active=True) == v2
    assert Promotion.objects.filter(domain=domain).count() == 2


def test_tolerances_are_per_domain_and_forgetting_general_ability_is_refused(domain, alice, evalset):
    version, v1 = evalset["version"], evalset["model"]
    results = {"model": {"accuracy": 0.58}, "base": {"accuracy": 0.6}}
    PromotionPolicy.objects.create(domain=domain, configuration="model", metrics={"accuracy": 0.05},
                                   probe_max_drop=0.1)
    run = finished(domain, v1, version, results, probe={"base": 0.75, "model": 0.7})
    assert gate_for(v1).allowed  # 0.02 worse than its base, 0.05 allowed; probe lost 0.05 of 0.1 allowed
    EvaluationRun.objects.filter(pk=run.pk).update(probe={"base": 0.75, "model": 0.5})
    gate = gate_for(v1)
    assert not gate.allowed and "general ability fell" in gate.reasons[0]


def test_an_embedding_version_that_retrieves_worse_than_its_base_is_refused(domain, alice):
    table = [{"name": "bm25", "hit@1": 0.9, "mrr@10": 0.92}, {"name": "base", "hit@1": 0.5, "mrr@10": 0.6},
             {"name": "fine-tuned", "hit@1": 0.4, "mrr@10": 0.62}]
    worse = ModelVersion.objects.create(domain=domain, number=1, kind="embedding", base_model="x",
                                        metrics={"retrieval": {"split": "test", "table": table}})
    gate = gate_for(worse)
    assert not gate.allowed and "hit@1 0.400 is worse than its base model's 0.500" in gate.reasons[0]
    table[2]["hit@1"] = 0.55
    better = ModelVersion.objects.create(domain=domain, number=2, kind="embedding", base_model="x",
                                         metrics={"retrieval": {"split": "test", "table": table}})
    assert gate_for(better).allowed


# Blind expert scoring ------------------------------------------------------------------------


@pytest.fixture
def scored_run(domain, evalset):
    run = finished(domain, evalset["model"], evalset["version"], {"model_rag": {}, "base_rag": {}})
    for position in range(20):
        for configuration, answer in (("model_rag", f"A{position}"), ("base_rag", f"B{position}")):
            EvalItem.objects.create(domain=domain, run=run, configuration=configuration, position=position,
                                    question=f"Q{position}", gold="g", answer=answer,
                                    metrics={"correct": configuration == "model_rag"})
    return run


def test_blind_order_is_randomised_per_question_and_stable_per_expert(scored_run, bob, alice):
    firsts = [scoring.next_pair(scored_run, bob, "model_rag", "base_rag", p).answers[0].configuration
              for p in range(20)]
    assert {"model_rag", "base_rag"} == set(firsts)  # both orders occur
    again = [scoring.next_pair(scored_run, bob, "model_rag", "base_rag", p).answers[0].configuration
             for p in range(20)]
    assert firsts == again
    others = [scoring.next_pair(scored_run, alice, "model_rag", "base_rag", p).answers[0].configuration
              for p in range(20)]
    assert others != firsts  # another expert draws other orders


def test_the_scorer_sees_no_configuration_and_scores_land_on_the_right_answers(scored_run, domain, bob, client_as):
    client = client_as(bob)
    url = f"/d/{domain.slug}/evaluations/{scored_run.pk}/score/?a=model_rag&b=base_rag"
    page = client.get(url).content.decode()
    start = page.index('id="score-form"')
    form = page[start:page.index("</form>", start)]
    for hidden in ("Fine-tuned", "Base model", "data-configuration", "evalitem", "item_id"):
        assert hidden not in form
    pair = scoring.next_pair(scored_run, bob, "model_rag", "base_rag")
    shown = [item.answer for item in pair.answers]
    assert form.index(shown[0]) < form.index(shown[1])
    response = client.post(url, {"a": "model_rag", "b": "base_rag", "position": pair.position, "score1": 5,
                                 "score2": 2, "comment1": "all facts", "comment2": ""})
    assert response.status_code == 302
    scores = {s.item.answer: s.score for s in ExpertScore.objects.filter(expert=bob).select_related("item")}
    assert scores == {shown[0]: 5, shown[1]: 2}
    assert scoring.next_pair(scored_run, bob, "model_rag", "base_rag").position != pair.position  # next question


def test_expert_aggregates_and_disagreements(scored_run, domain, alice, bob, vera):
    items = {(i.configuration, i.position): i for i in EvalItem.objects.filter(run=scored_run)}
    for expert, score in ((alice, 5), (bob, 1)):
        ExpertScore.objects.create(domain=domain, item=items[("model_rag", 0)], expert=expert, score=score)
    ExpertScore.objects.create(domain=domain, item=items[("base_rag", 1)], expert=alice, score=5)  # metrics: wrong
    for expert, score in ((alice, 3), (bob, 4)):
        ExpertScore.objects.create(domain=domain, item=items[("model_rag", 2)], expert=expert, score=score)
    summary = {row["configuration"]: row for row in scoring.expert_summary(scored_run)}
    assert summary["model_rag"]["n"] == 4 and summary["model_rag"]["mean"] == pytest.approx(3.25)
    assert summary["model_rag"]["low"] < 3.25 < summary["model_rag"]["high"]
    found = {(d["item"].configuration, d["item"].position): d["reasons"] for d in scoring.disagreements(scored_run)}
    assert found == {("model_rag", 0): ["experts"], ("base_rag", 1): ["automatic"]}


@pytest.fixture
def second_version_run(domain, evalset):
    """Another version's evaluation on the same held-out questions, with its own answers."""
    v2 = ModelVersion.objects.create(domain=domain, number=2, kind="sft", base_model="tiny")
    run = finished(domain, v2, evalset["version"], {"model_rag": {}})
    for position in range(20):
        EvalItem.objects.create(domain=domain, run=run, configuration="model_rag", position=position,
                                question=f"Q{position}", gold="g", answer=f"V2-{position}", metrics={"correct": True})
    return run


def test_two_versions_answers_are_paired_by_question_and_shown_blind(scored_run, second_version_run, domain, bob,
                                                                       alice, client_as):
    pairs = [scoring.next_pair(scored_run, bob, "model_rag", "model_rag", p, other=second_version_run)
             for p in range(20)]
    assert all({i.run_id for i in pair.answers} == {scored_run.pk, second_version_run.pk} for pair in pairs)
    assert all({i.answer for i in pair.answers} == {f"A{p}", f"V2-{p}"} for p, pair in enumerate(pairs))
    firsts = [pair.answers[0].run_id for pair in pairs]
    assert set(firsts) == {scored_run.pk, second_version_run.pk}  # both orders occur
    assert firsts != [scoring.next_pair(scored_run, alice, "model_rag", "model_rag", p,
                                        other=second_version_run).answers[0].run_id for p in range(20)]

    client = client_as(bob)
    url = f"/d/{domain.slug}/evaluations/{scored_run.pk}/score/?a=model_rag&b=model_rag&vs={second_version_run.pk}"
    page = client.get(url).content.decode()
    assert f'<option value="{second_version_run.pk}" selected>' in page  # the chooser names the other run
    form = page[page.index('id="score-form"'):]
    form = form[:form.index("</form>")]
    for hidden in ("v1", "v2", "Fine-tuned", "item_id"):
        assert hidden not in form
    pair = scoring.next_pair(scored_run, bob, "model_rag", "model_rag", other=second_version_run)
    response = client.post(url, {"a": "model_rag", "b": "model_rag", "vs": second_version_run.pk,
                                 "position": pair.position, "score1": 2, "score2": 5})
    assert response.status_code == 302 and f"vs={second_version_run.pk}" in response["Location"]
    saved = {s.item.answer: s.score for s in ExpertScore.objects.filter(expert=bob).select_related("item")}
    assert saved == {pair.answers[0].answer: 2, pair.answers[1].answer: 5}


def test_runs_on_other_questions_or_the_same_side_twice_cannot_be_paired(scored_run, second_version_run, domain,
                                                                           evalset, bob, client_as):
    with pytest.raises(ValidationError, match="two different answers"):
        scoring.next_pair(scored_run, bob, "model_rag", "model_rag")
    with pytest.raises(ValidationError, match="two different answers"):
        scoring.next_pair(scored_run, bob, "model_rag", "base_rag", other=second_version_run)  # v2 has no base_rag
    dv = evalset["version"]
    other_questions = type(dv).objects.create(domain=domain, dataset=dv.dataset, number=dv.number + 1,
                                              content_hash="x", version_hash="y", storage_path="elsewhere")
    EvaluationRun.objects.filter(pk=second_version_run.pk).update(dataset_version=other_questions)
    second_version_run.refresh_from_db()
    with pytest.raises(ValidationError, match="same held-out questions"):
        scoring.next_pair(scored_run, bob, "model_rag", "model_rag", other=second_version_run)
    assert second_version_run not in scoring.comparable_runs(scored_run)
    page = client_as(bob).get(f"/d/{domain.slug}/evaluations/{scored_run.pk}/score/"
                              f"?a=model_rag&b=model_rag&vs={second_version_run.pk}")
    assert page.status_code == 200 and 'id="pair-error"' in page.content.decode()
    assert not ExpertScore.objects.exists()


def test_expert_scores_roll_up_per_version_on_the_leaderboard(scored_run, second_version_run, domain, alice, bob,
                                                                vera, client_as):
    items = {(i.run_id, i.configuration, i.position): i for i in EvalItem.objects.all()}
    for position, (s1, s2) in enumerate([(2, 5), (3, 4), (2, 5)]):
        ExpertScore.objects.create(domain=domain, item=items[(scored_run.pk, "model_rag", position)], expert=alice,
                                   score=s1)
        ExpertScore.objects.create(domain=domain, item=items[(second_version_run.pk, "model_rag", position)],
                                   expert=bob, score=s2)
    rows = scoring.version_summary(domain)
    assert [(r["number"], r["configuration"], r["n"]) for r in rows] == [(2, "model_rag", 3), (1, "model_rag", 3)]
    assert rows[0]["mean"] == pytest.approx(14 / 3) and rows[1]["mean"] == pytest.approx(7 / 3)
    assert rows[0]["low"] < rows[0]["mean"] < rows[0]["high"] and rows[0]["experts"] == 1
    page = client_as(vera).get(f"/d/{domain.slug}/evaluations/").content.decode()
    section = page[page.index('id="version-scores"'):]
    assert section.index('data-version="2"') < section.index('data-version="1"')  # best first
    assert 'class="ci-plot"' in section and "4.67" in section


def test_owners_set_the_promotion_gate_and_nobody_else_can(domain, alice, bob, evalset, client_as):
    url = f"/d/{domain.slug}/evaluations/policy/"
    form = {"configuration": "model", "drop_accuracy": "0.05", "drop_hallucination_rate": "0", "probe_max_drop": "0.2"}
    assert client_as(bob).post(url, form).status_code == 403  # experts do not set the gate
    page = client_as(bob).get(f"/d/{domain.slug}/evaluations/").content.decode()
    assert 'id="policy-form"' not in page and 'id="gate-policy"' in page
    client = client_as(alice)
    assert client.post(url, form).status_code == 302
    policy = PromotionPolicy.objects.get(domain=domain)
    assert (policy.configuration, policy.metrics, policy.probe_max_drop) == (
        "model", {"accuracy": 0.05, "hallucination_rate": 0.0}, 0.2)
    finished(domain, evalset["model"], evalset["version"], {"model": {"accuracy": 0.57, "hallucination_rate": 0.1},
                                                           "base": {"accuracy": 0.6, "hallucination_rate": 0.1}})
    assert gate_for(evalset["model"]).allowed  # 0.03 below its base, 0.05 allowed now
    for bad in ({**form, "drop_accuracy": "", "drop_hallucination_rate": ""}, {**form, "probe_max_drop": "2"},
                {**form, "configuration": "judge"}):
        response = client.post(url, bad)
        assert response.status_code == 400 and 'id="policy-form"' in response.content.decode()
    policy.refresh_from_db()
    assert policy.metrics == {"accuracy": 0.05, "hallucination_rate": 0.0}  # a refused edit changes nothing


# Reports and the API -------------------------------------------------------------------------


def test_the_report_page_and_downloads(domain, bob, evalset, client_as, vera):
    run = evaluate(domain, bob, evalset, configurations=["extractive", "base_rag"], options={"probe": False})
    client = client_as(vera)
    page = client.get(f"/d/{domain.slug}/evaluations/{run.pk}/").content.decode()
    assert 'data-configuration="extractive"' in page and 'class="eval-chart"' in page and "住宿费标准" in page
    board = client.get(f"/d/{domain.slug}/evaluations/").content.decode()
    assert f'id="eval-{run.pk}"' in board and "data-accuracy=" in board
    rows = list(csv.DictReader(io.StringIO(client.get(f"/d/{domain.slug}/evaluations/{run.pk}/?format=csv")
                                           .content.decode("utf-8-sig"))))
    assert len(rows) == 6 and {r["configuration"] for r in rows} == {"extractive", "base_rag"}
    body = client.get(f"/d/{domain.slug}/evaluations/{run.pk}/?format=json").json()
    assert body["results"]["extractive"]["items"] == 3 and len(body["items"]) == 6
    assert client.get(f"/d/{domain.slug}/evaluations/{run.pk}/score/").status_code == 403  # viewers do not score


def test_the_api_starts_lists_and_reports(domain, bob, evalset, api_as, other_domain, charlie):
    client = api_as(bob)
    url = f"/api/domains/{domain.slug}/evaluations/"
    bad = client.post(url, {"model_version": evalset["model"].pk, "configurations": ["nope"]}, format="json")
    assert bad.status_code == 400 and "configurations" in bad.json()
    created = client.post(url, {"model_version": evalset["model"].pk, "configurations": ["extractive"],
                                "options": {"probe": False}}, format="json")
    assert created.status_code == 201 and created.json()["job"]["kind"] == "evaluate"
    run_job(created.json()["job"]["id"])
    one = client.get(f"{url}{created.json()['id']}/").json()
    assert one["results"]["extractive"]["items"] == 3
    assert len(client.get(f"{url}{created.json()['id']}/items/").json()) == 3
    report = client.get(f"{url}{created.json()['id']}/report/?format=csv")
    assert report.status_code == 200 and "extractive" in report.content.decode("utf-8-sig")
    assert api_as(charlie).get(f"{url}{created.json()['id']}/").status_code == 404


from .datasets_engine.test_teachers import SECRETS, server  # noqa: E402,F401 - the fixture is used by name


def test_a_teacher_judges_each_answer_and_its_mean_is_reported(domain, bob, alice, evalset, server):  # noqa: F811
    from datasets_app.models import TeacherConfig, TeacherKey
    from datasets_app.services import add_teacher_key

    teacher = TeacherConfig.objects.create(domain=domain, name="judge", provider="openai", model="judge-model",
                                           base_url=server.base_url, concurrency=1)
    add_teacher_key(teacher=teacher, label="k1", secret=SECRETS[0], by=alice)
    server.actions = [("good", {"score": 4, "reason": "right amount"}), ("good", {"score": 2, "reason": "vague"}),
                      ("good", {"score": 5, "reason": "correct refusal"})]
    run = evaluate(domain, bob, evalset, configurations=["extractive"],
                   options={"probe": False, "judge_teacher": teacher.pk})
    assert run.job.status == Job.Status.SUCCEEDED, run.job.error + run.job.log_tail
    scores = [i.metrics["judge_score"] for i in EvalItem.objects.filter(run=run).order_by("position")]
    assert scores == [4, 2, 5] and run.results["extractive"]["judge_score"] == pytest.approx(11 / 3, abs=1e-3)
    assert "<answer" in str(server.requests[0]["body"])  # the answer travels as delimited data
    assert TeacherKey.objects.get(teacher=teacher).requests == 3
    offline = TeacherConfig.objects.create(domain=domain, name="offline", provider="offline")
    with pytest.raises(ValidationError, match="cannot judge"):
        start_evaluation(domain=domain, model_version=evalset["model"], dataset_version=None, by=bob,
                         options={"judge_teacher": offline.pk})


@pytest.fixture
def task_versions(domain, bob, data_dir, tiny_models):  # noqa: F811
    """A frozen version whose entity and judge rows sit in validation, and the tiny Qwen as a grpo and a judge model."""
    from datasets_app.models import EntityExample, JudgeExample

    dataset = QADataset.default_for(domain)
    dataset_services.add_pair(dataset=dataset, by=bob, question="报销要什么？", answer="发票。", approve=True)
    for i, (text, mention) in enumerate([("张三在财务处报销。", "张三"), ("李四去北京出差。", "李四")]):
        EntityExample.objects.create(domain=domain, dataset=dataset, text=text, origin_key=f"e{i}",
                                     spans=[{"label": "name", "start": 0, "end": 1, "mention": mention}])
    for i, label in enumerate(["aligned", "not_aligned"]):
        JudgeExample.objects.create(domain=domain, dataset=dataset, question=f"问题{i}", passage="段落", analysis="…",
                                    label=label, origin_key=f"j{i}", messages=[
                                        {"role": "user", "content": f"问题{i}\n段落"},
                                        {"role": "assistant", "content": f"<think>…</think>{label}"}])
    version = versions.freeze_dataset(dataset=dataset, by=bob, validation_fraction=0.999).version
    folder = data_dir / "task-model"
    shutil.copytree(tiny_models["qwen"], folder)
    made = {}
    for number, kind in ((1, "grpo"), (2, "judge_sft")):
        made[kind] = ModelVersion.objects.create(domain=domain, number=number, kind=kind, base_model="tiny",
                                                 base_path=tiny_models["qwen"],
                                                 adapter_path=str(folder.relative_to(data_dir)),
                                                 dataset_hash=version.content_hash)
    return version, made


def test_task_models_get_per_type_f1_and_a_confusion_matrix(domain, bob, task_versions, client_as, sent):
    version, made = task_versions
    assert version.counts["entities"]["validation"] == 2 and version.counts["judge"]["validation"] == 2
    extractor = start_evaluation(domain=domain, model_version=made["grpo"], dataset_version=None, by=bob)
    assert extractor.configurations == ["entities"]
    run_job(extractor.job.pk)
    extractor.refresh_from_db()
    assert extractor.job.status == Job.Status.SUCCEEDED, extractor.job.error
    entities = extractor.results["entities"]
    assert entities["rows"] == 2 and entities["split"] == "validation" and {"micro", "macro"} <= set(entities)
    assert entities["micro"]["tp"] + entities["micro"]["fn"] == 2  # two gold names
    judge = start_evaluation(domain=domain, model_version=made["judge_sft"], dataset_version=None, by=bob)
    run_job(judge.job.pk)
    judge.refresh_from_db()
    verdicts = judge.results["judge"]
    assert verdicts["rows"] == 2 and sum(map(sum, verdicts["matrix"])) + verdicts["unparsed"] >= 2
    assert EvalItem.objects.filter(run=judge).count() == 2
    page = client_as(bob).get(f"/d/{domain.slug}/evaluations/{extractor.pk}/").content.decode()
    assert 'class="table compact entity-prf"' in page and 'data-label="micro"' in page
    assert 'data-label="rows"' not in page and 'data-label="split"' not in page
    assert 'class="table compact confusion"' in client_as(bob).get(
        f"/d/{domain.slug}/evaluations/{judge.pk}/").content.decode()


def test_the_admin_shows_expert_scores_and_disagreements(scored_run, domain, alice, bob, client):
    from django.contrib.auth import get_user_model

    item = EvalItem.objects.get(run=scored_run, configuration="model_rag", position=3)
    for expert, score in ((alice, 5), (bob, 1)):
        ExpertScore.objects.create(domain=domain, item=item, expert=expert, score=score)
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.org", "pw"))
    page = client.get(f"/admin/training_app/evaluationrun/{scored_run.pk}/change/").content.decode()
    assert "n=2, mean 3.00" in page
    assert '<div class="disagreement">#3 Q3 · model_rag · scores 5, 1 · automatic right · experts</div>' in page
