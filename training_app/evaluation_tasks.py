"""Evaluation: start a run (service) and the job that answers the held-out questions in each configuration.

The questions are a frozen dataset version's test split (held-out pairs, never trained on). A
held-out question whose expert answer is a refusal ("文档中没有涉及这个问题。") counts as one
the documents do not answer: the right reply is to say so. Each configuration answers every
question greedily; every answer is stored as an ``EvalItem`` the moment it exists, so a killed
or retried job continues with the next question and never writes one twice.
"""
from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from datasets_app.models import DatasetVersion
from domains.jobs import JobContext, enqueue_job, job_handler
from domains.models import Domain
from training_app.models import EvalItem, EvaluationRun, ModelVersion, TrainingRun

C = EvaluationRun.Configuration
NEEDS_MODEL = {C.MODEL, C.MODEL_RAG}
NEEDS_INDEX = {C.BASE_RAG, C.MODEL_RAG, C.EXTRACTIVE}
EVAL_BATCH = 8  # held-out questions per generate call
DEFAULT_CONFIGURATIONS = [C.BASE, C.MODEL, C.BASE_RAG, C.MODEL_RAG, C.EXTRACTIVE]
DEFAULT_OPTIONS = {"k": 3, "threshold": 0.0, "max_new_tokens": 128, "probe": True, "judge_teacher": None}
JUDGE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                                                 "reason": {"type": "string"}},
                "required": ["score", "reason"]}
LLM_KINDS = (TrainingRun.Kind.SFT, TrainingRun.Kind.CPT_SFT)
# Task models are measured on their own rows: the extractor on entity examples, the judge on judge examples.
TASK_KINDS = {TrainingRun.Kind.GRPO: ("entities", C.ENTITIES), TrainingRun.Kind.JUDGE_SFT: ("judge", C.JUDGE)}


def _text(value) -> str:
    """Model output as storable text: PostgreSQL refuses NUL characters, which small models can emit."""
    return str(value or "").replace("\x00", "")


def _held_split(version: DatasetVersion, kind: str) -> str:
    """The split a task model is measured on: test when it has rows, else validation (never train)."""
    counts = (version.counts or {}).get(kind) or {}
    return "test" if counts.get("test") else ("validation" if counts.get("validation") else "")


def start_evaluation(*, domain: Domain, model_version: ModelVersion, dataset_version: DatasetVersion | None, by,
                     configurations: list[str] | None = None, options: dict | None = None) -> EvaluationRun:
    """Check what can be checked, then create the run and queue its job."""
    from inference_app.services import index_for

    if model_version.domain_id != domain.pk:
        raise ValidationError({"model_version": "That model version belongs to another domain."})
    if model_version.kind not in LLM_KINDS and model_version.kind not in TASK_KINDS:
        raise ValidationError({"model_version": "Embedding models are measured when they are trained; "
                                                "continual pre-training has no answers to score."})
    if dataset_version is None:
        dataset_version = DatasetVersion.objects.for_domain(domain).filter(
            content_hash=model_version.dataset_hash).order_by("-created_at").first()
    if dataset_version is None or dataset_version.domain_id != domain.pk:
        raise ValidationError({"dataset_version": "Choose a frozen dataset version of this domain."})
    if model_version.kind in TASK_KINDS:
        rows, configuration = TASK_KINDS[model_version.kind]
        if not _held_split(dataset_version, rows):
            raise ValidationError({"dataset_version": f"That dataset version has no {rows} rows outside its train "
                                                      f"split to measure on."})
        configurations = [configuration]
    elif not (dataset_version.counts.get("qa") or {}).get("test"):
        raise ValidationError({"dataset_version": "That dataset version has no held-out test questions: mark some "
                                                  "pairs as held-out test in the review queue and freeze again."})
    configurations = [str(c) for c in (configurations or DEFAULT_CONFIGURATIONS)]
    allowed = [c for c in C.values if c not in (C.ENTITIES, C.JUDGE)] if model_version.kind in LLM_KINDS \
        else list(configurations)
    unknown = [c for c in configurations if c not in allowed]
    if unknown or not configurations:
        raise ValidationError({"configurations": f"Choose among {', '.join(C.values)}."})
    configurations = list(dict.fromkeys(configurations))
    if set(configurations) & NEEDS_INDEX and not index_for(domain).is_built:
        raise ValidationError({"configurations": "Configurations with retrieval need the domain's index: build it on "
                                                 "the Retrieval page first."})
    values = {**DEFAULT_OPTIONS, **(options or {})}
    try:
        values = {"k": int(values["k"]), "threshold": float(values["threshold"]),
                  "max_new_tokens": int(values["max_new_tokens"]), "probe": bool(values["probe"]),
                  "judge_teacher": int(values["judge_teacher"]) if values.get("judge_teacher") else None}
    except (TypeError, ValueError, KeyError):
        raise ValidationError({"options": "k and max_new_tokens are whole numbers, threshold a number, "
                                          "judge_teacher a teacher id."}) from None
    if values["judge_teacher"] is not None:
        from datasets_app.models import TeacherConfig

        teacher = TeacherConfig.objects.for_domain(domain).filter(pk=values["judge_teacher"]).first()
        if teacher is None or teacher.provider == TeacherConfig.Provider.OFFLINE:
            raise ValidationError({"options": "judge_teacher must be one of the domain's LLM teachers (the offline "
                                              "teacher cannot judge answers)."})
    if not 1 <= values["k"] <= 20 or not 1 <= values["max_new_tokens"] <= 1024 or not 0 <= values["threshold"] <= 1:
        raise ValidationError({"options": "k is 1–20, max_new_tokens 1–1024 and threshold 0–1."})
    with transaction.atomic():
        run = EvaluationRun.objects.create(domain=domain, model_version=model_version, dataset_version=dataset_version,
                                           configurations=configurations, options=values,
                                           created_by=by if getattr(by, "is_authenticated", False) else None)
        job = enqueue_job(domain=domain, kind="evaluate", params={"evaluation_id": run.pk}, created_by=by)
        EvaluationRun.objects.filter(pk=run.pk).update(job=job)
        run.job = job
    return run


def _generator(version: ModelVersion, configuration: str):
    from django.conf import settings

    from inference_app.engine.answering import load_generator

    if configuration in NEEDS_MODEL:
        return load_generator(str(settings.VSM_DATA_DIR / version.adapter_path), version.base_path or None)
    return load_generator(version.base_path)


@job_handler("evaluate", _("Evaluate a model"))
def evaluate(ctx: JobContext) -> dict:
    from datasets_app import versions
    from inference_app import services as retrieval
    from inference_app.engine.answering import GenerationError, GenerationSettings, answer_batch
    from training_app.engine.evaluation import aggregate, is_refusal, score_answer

    run = EvaluationRun.objects.select_related("model_version", "dataset_version").filter(
        pk=ctx.params.get("evaluation_id"), domain=ctx.domain).first()
    if run is None:
        ctx.fail("The evaluation was deleted before it started.")
    if run.configurations and run.configurations[0] in (C.ENTITIES, C.JUDGE):
        return _evaluate_task_model(ctx, run, run.configurations[0])
    try:
        questions = versions.load_qa(run.dataset_version, "test")
    except versions.VersionFilesMissing as exc:
        ctx.fail(str(exc))
    if not questions:
        ctx.fail("The dataset version has no held-out test questions.")
    options = {**DEFAULT_OPTIONS, **(run.options or {})}
    engine_index = encoder = weights = None
    if set(run.configurations) & NEEDS_INDEX:
        index = retrieval.index_for(ctx.domain)
        if not index.is_built:
            ctx.fail("Configurations with retrieval need the domain's index: build it on the Retrieval page first.")
        engine_index = retrieval.loaded_index(index)
        encoder = retrieval._encoder_for(index)
        weights = retrieval.fusion_weights(index)
    # Greedy and without the serving repetition penalty: the same answer every run, what SFT measured.
    greedy = GenerationSettings.greedy(max_new_tokens=int(options["max_new_tokens"]))
    total = len(run.configurations) * len(questions)
    done = EvalItem.objects.filter(run=run).count()
    ctx.progress(done, total, message=gettext_noop("Answering the held-out questions"))
    results = {}
    for configuration in run.configurations:
        have = set(EvalItem.objects.filter(run=run, configuration=configuration).values_list("position", flat=True))
        generator = None
        if configuration != C.EXTRACTIVE and len(have) < len(questions):
            try:
                generator = _generator(run.model_version, configuration)
            except GenerationError as exc:
                ctx.fail(f"{C(configuration).label}: {exc}")
        mode = {C.BASE: "model_only", C.MODEL: "model_only", C.EXTRACTIVE: "extractive"}.get(configuration, "grounded")
        todo = [position for position in range(len(questions)) if position not in have]
        # A few questions per generate call: a batch decodes several answers for little more than one
        # on a CPU, and each batch is written before the next starts (a retry redoes at most one batch).
        for start in range(0, len(todo), EVAL_BATCH):
            batch = todo[start:start + EVAL_BATCH]
            ctx.check_cancelled()
            started = time.monotonic()
            try:
                answers = answer_batch([questions[p].question for p in batch], mode=mode, index=engine_index,
                                       encoder=encoder, weights=weights, generator=generator, k=int(options["k"]),
                                       threshold=float(options["threshold"]), settings=greedy)
            except GenerationError as exc:
                ctx.fail(f"{C(configuration).label}: {exc}")
            seconds = round((time.monotonic() - started) / len(batch), 3)
            for position, answer in zip(batch, answers):
                q = questions[position]
                answerable = not is_refusal(q.answer)
                gold_ids = [q.source_chunk_id] if q.source_chunk_id else []
                metrics = score_answer(answer.text, q.answer, sources=[q.chunk_text] if q.chunk_text else [],
                                       answerable=answerable, question=q.question,
                                       retrieved_ids=list(answer.retrieved_ids) if mode != "model_only" else None,
                                       gold_ids=gold_ids)
                EvalItem.objects.get_or_create(run=run, configuration=configuration, position=position, defaults=dict(
                    domain=ctx.domain, question=q.question, gold=q.answer, answer=_text(answer.text),
                    answerable=answerable,
                    citations=[c for c in answer.to_dict().get("citations", [])][:5], metrics=metrics,
                    seconds=seconds))
                done += 1
            ctx.progress(done, total, message=gettext_noop("Answering the held-out questions"))
        if options.get("judge_teacher"):
            _judge(ctx, run, configuration, int(options["judge_teacher"]))
        items = list(EvalItem.objects.filter(run=run, configuration=configuration).values_list("metrics", flat=True))
        judged = [m["judge_score"] for m in items if isinstance(m.get("judge_score"), int)]
        results[configuration] = {**aggregate(items),
                                  "seconds_per_answer": _mean_seconds(run, configuration),
                                  **({"judge_score": round(sum(judged) / len(judged), 3), "judged": len(judged)}
                                     if judged else {})}
        EvaluationRun.objects.filter(pk=run.pk).update(results=results)
        ctx.log(f"{C(configuration).label}: accuracy {results[configuration].get('accuracy')}")
    probe = _probe(ctx, run) if options.get("probe") else {}
    EvaluationRun.objects.filter(pk=run.pk).update(results=results, probe=probe)
    return {"evaluation_id": run.pk, "questions": len(questions),
            "accuracy": {c: r.get("accuracy") for c, r in results.items()}, "probe": probe}


def _evaluate_task_model(ctx: JobContext, run: EvaluationRun, configuration: str) -> dict:
    """Entity extractors: precision/recall/F1 per type. Judges: accuracy and the confusion matrix."""
    from dataclasses import asdict

    from django.conf import settings

    from datasets_app import versions
    from training_app.engine import entities as ent
    from training_app.engine.evaluation import confusion_matrix, per_type_prf
    from training_app.engine.judge import read_verdict
    from training_app.engine.sft import generate_answers, load_for_inference

    version = run.model_version
    rows_kind = "entities" if configuration == C.ENTITIES else "judge"
    split = _held_split(run.dataset_version, rows_kind)
    ctx.progress(0, 0, message=gettext_noop("Loading the model"))
    model, tokenizer = load_for_inference(str(settings.VSM_DATA_DIR / version.adapter_path), version.base_path or None)
    EvalItem.objects.filter(run=run).delete()  # one pass, written whole: a retry measures again
    if configuration == C.ENTITIES:
        labels = [x.strip() for x in (version.config.get("entity_labels") or "").split(",") if x.strip()] \
            or list(ent.CLUENER_LABELS)
        rows = versions.load_entities(run.dataset_version, split)
        ctx.progress(0, len(rows), message=gettext_noop("Extracting entities"))
        raw = ent.extract_entities(model, tokenizer, [r.text for r in rows], labels)
        preds = [ent.parse_entities(text) for text in raw]
        golds = [ent.gold_from_spans([asdict(s) for s in r.spans], labels) for r in rows]
        result = {**per_type_prf(preds, golds), "rows": len(rows), "split": split,
                  "valid_json": sum(p is not None for p in preds) / len(rows) if rows else None}
        items = [EvalItem(domain=ctx.domain, run=run, configuration=configuration, position=i, question=r.text,
                          gold=ent.answer_json(g), answer=_text(text),
                          metrics={**ent.entity_f1(p, g), "valid": p is not None})
                 for i, (r, text, p, g) in enumerate(zip(rows, raw, preds, golds))]
    else:
        rows = versions.load_judge(run.dataset_version, split)
        ctx.progress(0, len(rows), message=gettext_noop("Asking the judge"))
        asked = []
        for r in rows:
            system = next((m["content"] for m in r["messages"] if m["role"] == "system"), None)
            user = next(m["content"] for m in r["messages"] if m["role"] == "user")
            asked.append({"question": user, "system": system})
        verdicts = [read_verdict(t) for t in generate_answers(None, None, asked, 256, model=model,
                                                               tokenizer=tokenizer)]
        gold = [r["label"] for r in rows]
        result = {**confusion_matrix([v.label for v in verdicts], gold), "rows": len(rows), "split": split,
                  "unparsed": sum(v.label is None for v in verdicts)}
        items = [EvalItem(domain=ctx.domain, run=run, configuration=configuration, position=i, question=a["question"],
                          gold=g, answer=_text(v.raw), metrics={"label": v.label, "correct": v.label == g})
                 for i, (a, v, g) in enumerate(zip(asked, verdicts, gold))]
    EvalItem.objects.bulk_create(items)
    EvaluationRun.objects.filter(pk=run.pk).update(results={configuration: result})
    ctx.progress(len(rows), len(rows), message=gettext_noop("Done"))
    return {"evaluation_id": run.pk, "items": len(rows), configuration: {k: result.get(k) for k in
                                                                        ("accuracy", "micro") if k in result}}


def _judge(ctx: JobContext, run: EvaluationRun, configuration: str, teacher_id: int) -> None:
    """LLM-as-judge with one of the domain's teachers: a 1–5 score and a reason per answer, against the rubric.

    Answers already judged keep their score (a retried job asks only for the rest); an answer the
    teacher cannot judge stays unjudged and the job goes on.
    """
    from datasets_app import teaching
    from datasets_app.engine.prompts import Prompt
    from datasets_app.engine.teachers import TeacherError, TeacherTask
    from datasets_app.models import TeacherConfig
    from training_app.engine.evaluation import judge_messages

    config = TeacherConfig.objects.filter(pk=teacher_id, domain=ctx.domain).first()
    teacher = teaching.build_teacher(config) if config is not None else None
    if teacher is None:
        ctx.log("judge skipped: the judging teacher is gone or is the offline teacher")
        return
    ctx.progress(0, 0, message=gettext_noop("Judging the answers"))
    failed = 0
    for item in EvalItem.objects.filter(run=run, configuration=configuration).order_by("position"):
        if isinstance((item.metrics or {}).get("judge_score"), int):
            continue
        ctx.check_cancelled()
        system, user = judge_messages(item.question, item.gold, item.answer)
        prompt = Prompt(recipe="judge_answer", lang="zh" if any("\u4e00" <= ch <= "\u9fff" for ch in item.question)
                        else "en", system=system["content"], user=user["content"], schema=JUDGE_SCHEMA,
                        schema_name="judgement")
        try:
            result = teacher.generate(TeacherTask(prompt=prompt, temperature=0.0,
                                                  task_id=f"evaluation:{run.pk}:{configuration}:{item.position}"))
        except TeacherError as exc:
            failed += 1
            ctx.log(f"judge: answer {item.position} of {configuration} not judged: {exc}")
            continue
        score = result.data.get("score") if isinstance(result.data, dict) else None
        if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
            failed += 1
            continue
        item.metrics = {**(item.metrics or {}), "judge_score": score,
                        "judge_reason": _text(result.data.get("reason", ""))[:1000]}
        EvalItem.objects.filter(pk=item.pk).update(metrics=item.metrics)
    teaching.record_usage(config, teacher.usage())  # requests and tokens per key, as recipes count them
    if failed:
        ctx.log(f"judge: {failed} answer(s) of {configuration} could not be judged")


def _mean_seconds(run: EvaluationRun, configuration: str) -> float | None:
    seconds = list(EvalItem.objects.filter(run=run, configuration=configuration).values_list("seconds", flat=True))
    return round(sum(seconds) / len(seconds), 3) if seconds else None


def _probe(ctx: JobContext, run: EvaluationRun) -> dict:
    """General ability of the base and the fine-tuned model on the built-in probe (no retrieval, greedy)."""
    from inference_app.engine.answering import GenerationSettings, model_only_messages
    from training_app.engine.probe import PROBE, probe_score

    ctx.progress(0, 0, message=gettext_noop("General-ability probe"))
    settings = GenerationSettings.greedy(max_new_tokens=32)
    out: dict = {"wrong": {}}
    for name, configuration in (("base", C.BASE), ("model", C.MODEL)):
        generator = _generator(run.model_version, configuration)
        answers = generator.generate([model_only_messages(q.question) for q in PROBE], settings)
        score = probe_score(answers)
        out[name] = score["accuracy"]
        out["wrong"][name] = score["wrong"]
    ctx.log(f"general-ability probe: base {out['base']:.2f}, fine-tuned {out['model']:.2f}")
    return out
