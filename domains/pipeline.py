"""The whole pipeline as one job: documents → QA data → dataset version → trained models → evaluation
→ the best configuration promoted → GGUF export → a served chat.

Each stage is a Job of its own (the jobs the pages start: ``distill_qa``, ``train``, ``evaluate``,
``export``, ``index``; short steps such as approving or freezing are ``pipeline_step`` jobs), run by
the ``pipeline`` job one after the other, in the same worker (or waited for, when another worker took
it first). The pipeline job records each stage's job and outcome in its ``result``; started again
(``restart_job``, ``manage.py run_pipeline --resume``, the API's ``resume``), it skips the stages
that succeeded and restarts the failed one's own job, which continues from its checkpoints.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from domains.jobs import JobContext, enqueue_job, job_handler, reap_stale_jobs, restart_job, run_job
from domains.models import Document, Domain, Job

SAMPLES_DIR = Path(settings.BASE_DIR) / "samples"
DEMO_NOTE = "demo mode: approved automatically by the pipeline, not reviewed by an expert"


@dataclass(frozen=True)
class Sample:
    """A sample domain that ships in ``samples/``: documents, the ones to hand over as scans, held-out questions."""

    folder: str
    name: str
    language: str
    documents: tuple[str, ...]
    scanned: tuple[str, ...] = ()
    description: str = ""
    # Articles and manual sections are short: chunks of about one article give the teacher one unit each
    # and keep a grounded prompt (k passages) within a small model's context.
    chunk_chars: int = 400
    chunk_overlap: int = 40
    per_chunk: int = 6  # the teacher finds several facts in an article (deadlines, amounts, duties)

    @property
    def path(self) -> Path:
        return SAMPLES_DIR / self.folder

    def heldout(self) -> list[dict]:
        text = (self.path / "heldout.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


SAMPLES = {
    "finance": Sample("finance", "东湖大学财务报销 (demo)", "zh",
                      ("reimbursement_policy.md", "travel_rules.md"), scanned=("travel_rules.md",),
                      description="A university's reimbursement policy and its travel rules (the rules as a scan)."),
    "manual": Sample("manual", "OD-300 drive manual (demo)", "en", ("drive_manual.md",),
                     description="An equipment manual with fault codes."),
}


# Options --------------------------------------------------------------------------------------

DEFAULT_OPTIONS = {
    "demo": False,               # approve every pending pair automatically (marked as demo everywhere)
    "sample": "",                # a SAMPLES key: its held-out questions are imported as the test set
    "base_model": "embedded:gemma3-270m",
    "embedding_model": "embedded:all-minilm-l6-v2",
    "per_chunk": 3,              # QA pairs the teacher writes per chunk
    "test_fraction": 0.1,        # held out by freeze when experts marked no held-out questions
    "sft": {"grounded": True, "max_length": 1024},  # overrides of the LoRA SFT config (epochs, learning_rate, ...); grounded:
                                 # also train on the chat's grounded prompt, so fine-tuned + retrieval works
    "embedding": {},             # overrides of the embedding config
    "evaluation": {"max_new_tokens": 64},
    "gguf_outtype": "q8_0",
}
OPTION_TYPES = {"demo": bool, "sample": str, "base_model": str, "embedding_model": str, "per_chunk": int,
                "test_fraction": float, "sft": dict, "embedding": dict, "evaluation": dict, "gguf_outtype": str}


def clean_options(options: dict | None) -> dict:
    """Known keys with the right types, else a ValidationError naming the key."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValidationError({"options": f"Unknown pipeline option(s): {', '.join(unknown)}; known: "
                                          f"{', '.join(DEFAULT_OPTIONS)}."})
    out = {}
    for key, default in DEFAULT_OPTIONS.items():
        value = options.get(key, default)
        kind = OPTION_TYPES[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:  # "false" is not False, 3.7 is not 3
            raise ValidationError({"options": f"{key} must be {'an object of settings' if kind is dict else 'a ' + kind.__name__}."})
        out[key] = {**default, **value} if kind is dict else value  # settings add to the defaults
    if out["sample"] and out["sample"] not in SAMPLES:
        raise ValidationError({"options": f"sample must be one of {', '.join(SAMPLES)}."})
    if not 1 <= out["per_chunk"] <= 10:
        raise ValidationError({"options": "per_chunk is 1–10."})
    if not 0 < out["test_fraction"] < 0.5:
        raise ValidationError({"options": "test_fraction is between 0 and 0.5."})
    if out["gguf_outtype"] not in ("f16", "q8_0"):
        raise ValidationError({"options": "gguf_outtype is f16 or q8_0."})
    return out


# Stages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    label: object
    start: Callable[[PipelineRun], Job]


class PipelineRun:
    """What the stages share: the domain, who started it, options, and each stage's record."""

    def __init__(self, domain: Domain, by, options: dict, state: dict, job_id: int | None = None):
        self.domain, self.by, self.options, self.state, self.job_id = domain, by, options, state, job_id

    def output(self, stage: str, key: str):
        return (self.state.get(stage) or {}).get(key)

    # What earlier stages made (recorded by them, else the domain's newest, for --stages runs).
    def dataset(self):
        from datasets_app.models import QADataset

        return QADataset.default_for(self.domain)

    def dataset_version(self):
        from datasets_app.models import DatasetVersion

        pk = self.output("freeze", "dataset_version")
        query = DatasetVersion.objects.for_domain(self.domain)
        found = query.filter(pk=pk).first() if pk else query.order_by("-created_at", "-pk").first()
        if found is None:
            raise StageError("There is no frozen dataset version yet: run the freeze stage first.")
        return found

    def model(self, stage: str, kind: str):
        from training_app.models import ModelVersion

        pk = self.output(stage, "model_version")
        query = ModelVersion.objects.for_domain(self.domain).filter(kind=kind)
        found = query.filter(pk=pk).first() if pk else query.order_by("-number").first()
        if found is None:
            raise StageError(f"There is no {kind} model version yet: run the {stage} stage first.")
        return found


class StageError(Exception):
    """A stage cannot start; the message says what to do."""


def _step(run: PipelineRun, name: str) -> Job:
    return enqueue_job(domain=run.domain, kind="pipeline_step", params={"stage": name, "pipeline": run.job_id},
                       created_by=run.by)


def _start_distill(run: PipelineRun, recipe: str) -> Job:
    from datasets_app.services import default_teacher, start_recipe

    return start_recipe(dataset=run.dataset(), recipe=recipe, teacher=default_teacher(run.domain), by=run.by,
                        per_chunk=run.options["per_chunk"])


def _start_embedding(run: PipelineRun) -> Job:
    from training_app.services import start_training

    return start_training(domain=run.domain, dataset_version=run.dataset_version(), by=run.by, kind="embedding",
                          base_model=run.options["embedding_model"], overrides=run.options["embedding"],
                          name="pipeline").job


def _start_index(run: PipelineRun) -> Job:
    from inference_app.services import start_index_build

    return start_index_build(domain=run.domain, by=run.by, reason="pipeline")


def _start_sft(run: PipelineRun) -> Job:
    from training_app.services import start_training

    return start_training(domain=run.domain, dataset_version=run.dataset_version(), by=run.by, kind="sft",
                          base_model=run.options["base_model"], overrides=run.options["sft"], name="pipeline").job


def _start_evaluation(run: PipelineRun) -> Job:
    from inference_app.serving import deployment_for
    from training_app.evaluation_tasks import start_evaluation

    # Measured as the chat will serve it: the deployment's k and "not covered" threshold, unless set.
    deployment = deployment_for(run.domain)
    options = {"k": deployment.k, "threshold": deployment.threshold, **run.options["evaluation"]}
    return start_evaluation(domain=run.domain, model_version=run.model("sft", "sft"),
                            dataset_version=run.dataset_version(), by=run.by, options=options).job


def _start_export(run: PipelineRun) -> Job:
    from training_app.services import start_export

    return start_export(domain=run.domain, model_version=run.model("sft", "sft"), by=run.by, merged=False,
                        gguf_outtype=run.options["gguf_outtype"], quantize="Q4_K_M" if _llama_cpp() else "",
                        modelfile=True).job


def _llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


STAGES: list[Stage] = [
    Stage("ingest", _("Read the documents (OCR for scans)"), lambda r: _step(r, "ingest")),
    Stage("heldout", _("Held-out test questions"), lambda r: _step(r, "heldout")),
    Stage("distill", _("Write QA pairs with the teacher"), lambda r: _start_distill(r, "qa")),
    Stage("approve", _("Approve the QA pairs"), lambda r: _step(r, "approve")),
    Stage("retrieval_data", _("Mine retrieval examples"), lambda r: _start_distill(r, "retrieval")),
    Stage("freeze", _("Freeze a dataset version"), lambda r: _step(r, "freeze")),
    Stage("embedding", _("Fine-tune the embedding model"), _start_embedding),
    Stage("promote_embedding", _("Promote the embedding model if it retrieves better"),
          lambda r: _step(r, "promote_embedding")),
    Stage("index", _("Build the retrieval index"), _start_index),
    Stage("sft", _("LoRA SFT of the base LLM"), _start_sft),
    Stage("evaluate", _("Evaluate every configuration"), _start_evaluation),
    Stage("promote", _("Promote the best configuration"), lambda r: _step(r, "promote")),
    Stage("export", _("Export a GGUF"), _start_export),
    Stage("serve", _("Serve the chat"), lambda r: _step(r, "serve")),
]
STAGE_NAMES = [s.name for s in STAGES]
_BY_NAME = {s.name: s for s in STAGES}


def stage_label(name: str) -> str:
    stage = _BY_NAME.get(name)
    return str(stage.label) if stage else name


def clean_stages(stages) -> list[str]:
    """Stage names in pipeline order (a comma-separated string or a list); all of them by default."""
    if not stages:
        return list(STAGE_NAMES)
    if isinstance(stages, str):
        stages = [s for s in stages.replace(" ", "").split(",") if s]
    unknown = [s for s in stages if s not in _BY_NAME]
    if unknown:
        raise ValidationError({"stages": f"Unknown stage(s) {', '.join(unknown)}; the stages are "
                                         f"{', '.join(STAGE_NAMES)}."})
    return [s for s in STAGE_NAMES if s in set(stages)]


# Starting and resuming ------------------------------------------------------------------------


def active_pipeline(domain: Domain) -> Job | None:
    return Job.objects.for_domain(domain).filter(kind="pipeline").active().order_by("-pk").first()


def demo_done(slug: str) -> bool:
    """True when ``slug`` has a pipeline that finished (the quickstart's demo runs once)."""
    return Job.objects.filter(domain__slug=slug, kind="pipeline", status=Job.Status.SUCCEEDED).exists()


def latest_pipeline(domain: Domain) -> Job | None:
    return Job.objects.for_domain(domain).filter(kind="pipeline").order_by("-pk").first()


PROMOTING = {"promote_embedding", "promote"}  # they change what the domain serves: owners only


def _check_promoting(stages, may_promote: bool) -> None:
    if PROMOTING & set(stages) and not may_promote:
        raise PermissionDenied("Only an owner of the domain can run the promote stages (they change what the "
                               "domain serves); leave them out, or ask an owner to run the pipeline.")


def _lock(domain: Domain) -> None:
    """One pipeline start or resume at a time per domain."""
    Domain.objects.select_for_update().filter(pk=domain.pk).first()
    running = active_pipeline(domain)
    if running is not None:
        raise ValidationError({"pipeline": f"The pipeline is already running for {domain.slug} (job "
                                           f"#{running.pk}); wait for it or cancel it."})


def start_pipeline(*, domain: Domain, by, stages=None, options: dict | None = None, may_promote: bool = True) -> Job:
    """Queue the pipeline (one at a time per domain)."""
    stages, options = clean_stages(stages), clean_options(options)
    _check_promoting(stages, may_promote)
    with transaction.atomic():
        _lock(domain)
        return enqueue_job(domain=domain, kind="pipeline", params={"stages": stages, "options": options},
                           created_by=by)


def resume_pipeline(*, domain: Domain, by, may_promote: bool = True) -> Job:
    """Start the domain's last pipeline again where it stopped (its finished stages are kept)."""
    job = latest_pipeline(domain)
    if job is None:
        raise ValidationError({"pipeline": f"{domain.slug} has no pipeline to resume; start one."})
    if not job.is_finished:
        return job
    if job.status == Job.Status.SUCCEEDED:
        raise ValidationError({"pipeline": f"The last pipeline of {domain.slug} (job #{job.pk}) finished; "
                                           f"start a new one to run it again."})
    _check_promoting(job.params.get("stages") or [], may_promote)
    with transaction.atomic():
        _lock(domain)
        # Stages that did not finish wait again (their jobs are restarted by the pipeline, not replaced).
        result = dict(job.result or {})
        result["stages"] = {name: entry if entry.get("status") == Job.Status.SUCCEEDED
                            else {**entry, "status": "waiting"}
                            for name, entry in (result.get("stages") or {}).items()}
        Job.objects.filter(pk=job.pk, status__in=[Job.Status.FAILED, Job.Status.CANCELLED]).update(
            result={**result, "child_job": None, "current": None})
        return restart_job(job, by=by)


# The pipeline job ------------------------------------------------------------------------------


def _wait_or_run(ctx: JobContext, job: Job, poll: float = 0.5) -> Job:
    """Run ``job`` here if it is still queued, else wait for whoever runs it. A job whose worker died
    is put back by the reaper (called here too, so a pipeline with no scheduler around still recovers)."""
    from domains.jobs import cancel_job, queue_for

    last_reap = time.monotonic()
    here = queue_for(job.kind) is None  # GPU kinds are left to the GPU workers
    while True:
        job.refresh_from_db()
        if job.is_finished:
            return job
        if ctx.should_stop():
            cancel_job(job)
            ctx.check_cancelled()
        if here and job.status == Job.Status.QUEUED and run_job(job.pk) != "skipped":
            continue
        if time.monotonic() - last_reap > 15:
            reap_stale_jobs()
            last_reap = time.monotonic()
        time.sleep(poll)


def _stage_outputs(name: str, job: Job) -> dict:
    """What a finished stage made, for the stages after it (ids) and for people (a short summary)."""
    result = job.result or {}
    if job.kind == "train":
        from training_app.models import ModelVersion

        version = ModelVersion.objects.filter(run_id=job.params.get("run_id")).first()
        out = {"run": job.params.get("run_id"), "model_version": version.pk if version else None,
               "number": version.number if version else None}
        for key in ("final_train_loss", "best_val_loss", "steps", "retrieval"):
            if result.get(key) is not None:
                out[key] = result[key]
        return out
    if job.kind == "evaluate":
        return {"evaluation": job.params.get("evaluation_id")}
    if job.kind == "export":
        return {"export": job.params.get("export_id")}
    if job.kind.startswith("distill_"):
        return {"new_rows": result.get("new_rows"), "rows_total": result.get("rows_total")}
    return dict(result)


@job_handler("pipeline", _("Run the whole pipeline"))
def pipeline(ctx: JobContext) -> dict:
    domain = ctx.domain
    stages = clean_stages(ctx.params.get("stages"))
    options = clean_options(ctx.params.get("options"))
    by = ctx.job.created_by
    state: dict = dict((ctx.job.result or {}).get("stages") or {})
    run = PipelineRun(domain, by, options, state, ctx.job_id)
    for position, name in enumerate(stages):
        entry = state.get(name) or {}
        if entry.get("status") == Job.Status.SUCCEEDED:
            continue
        ctx.progress(position, len(stages), message=stage_label(name))
        previous = Job.objects.for_domain(domain).filter(pk=entry.get("job")).first() if entry.get("job") else None
        if previous is not None and previous.status in (Job.Status.FAILED, Job.Status.CANCELLED):
            child = restart_job(previous, by=by)
            ctx.log(f"{name}: job #{child.pk} started again, from where it stopped")
        elif previous is not None and previous.status != Job.Status.SUCCEEDED:
            child = previous  # still queued or running (a worker died under it): wait for it
        elif previous is not None:
            child = previous
        else:
            ctx.check_cancelled()
            try:
                # The stage's job reaches the broker only once the pipeline has recorded it (on commit),
                # so a cancel or a crash in between never leaves a job nobody knows of.
                with transaction.atomic():
                    child = _BY_NAME[name].start(run)
                    state[name] = {"job": child.pk, "kind": child.kind, "status": Job.Status.RUNNING}
                    ctx.report(stages=state, current=name, child_job=child.pk)
            except (ValidationError, StageError) as exc:
                messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
                state[name] = {"status": Job.Status.FAILED, "error": " ".join(messages)}
                ctx.report(stages=state, current=name, child_job=None)
                ctx.fail(f"Stage {name} ({stage_label(name)}) could not start: {' '.join(messages)}")
            ctx.log(f"{name}: job #{child.pk} ({child.kind})")
        state[name] = {"job": child.pk, "kind": child.kind, "status": Job.Status.RUNNING}
        ctx.report(stages=state, current=name, child_job=child.pk)
        started = time.monotonic()
        child = _wait_or_run(ctx, child)
        state[name] = {"job": child.pk, "kind": child.kind, "status": child.status,
                       "seconds": round(time.monotonic() - started, 1)}
        if child.status == Job.Status.SUCCEEDED:
            state[name].update(_stage_outputs(name, child))
        else:
            state[name]["error"] = child.error
        ctx.report(stages=state, current=name, child_job=None)
        if child.status == Job.Status.CANCELLED:
            ctx.check_cancelled()
            ctx.fail(f"Stage {name} ({stage_label(name)}) was cancelled; resume the pipeline to continue it.")
        if child.status != Job.Status.SUCCEEDED:
            ctx.fail(f"Stage {name} ({stage_label(name)}) failed: {child.error} — fix the cause, then resume the "
                     f"pipeline (manage.py run_pipeline {domain.slug} --resume): finished stages are kept.")
    ctx.progress(len(stages), len(stages), message=gettext_noop("Done"))
    return {"stages": state, "child_job": None, "current": None}


# Steps: the stages that have no job kind of their own ------------------------------------------

STEPS: dict[str, Callable[[JobContext, PipelineRun], dict]] = {}


def step(name: str):
    def register(func):
        STEPS[name] = func
        return func

    return register


@job_handler("pipeline_step", _("Pipeline step"))
def pipeline_step(ctx: JobContext) -> dict:
    name = ctx.params.get("stage")
    if name not in STEPS:
        ctx.fail(f"Unknown pipeline step {name!r}.")
    parent = Job.objects.for_domain(ctx.domain).filter(kind="pipeline", pk=ctx.params.get("pipeline")).first()
    params = (parent.params if parent else {}) or {}
    state = ((parent.result if parent else {}) or {}).get("stages") or {}
    run = PipelineRun(ctx.domain, ctx.job.created_by, clean_options(params.get("options")), state, ctx.params.get("pipeline"))
    try:
        return STEPS[name](ctx, run)
    except StageError as exc:
        ctx.fail(str(exc))
    except ValidationError as exc:  # a service refused (the gate changed meanwhile, nothing to freeze, ...)
        ctx.fail(" ".join(str(m) for m in exc.messages))


@step("ingest")
def ingest_step(ctx: JobContext, run: PipelineRun) -> dict:
    """Every document read: the ingest jobs still waiting run here (or are waited for)."""
    documents = list(Document.objects.for_domain(run.domain).select_related("last_job").order_by("pk"))
    if not documents:
        raise StageError("The domain has no documents: upload some first (or start from a sample: "
                         "manage.py run_pipeline demo --sample finance).")
    for done, document in enumerate(documents):
        ctx.progress(done, len(documents), message=document.filename)
        if document.last_job is not None and not document.last_job.is_finished:
            _wait_or_run(ctx, document.last_job)
    ready = Document.objects.for_domain(run.domain).filter(status=Document.Status.READY)
    failed = {d.filename: d.error for d in Document.objects.for_domain(run.domain).filter(status=Document.Status.FAILED)}
    for name, error in failed.items():
        ctx.log(f"{name} could not be read: {error}")
    if not ready.exists():
        raise StageError("No document could be read: " + "; ".join(f"{n}: {e}" for n, e in failed.items()))
    from django.db.models import Count, Sum

    totals = {"chunks": ready.aggregate(n=Count("chunks"))["n"], "pages": ready.aggregate(n=Sum("page_count"))["n"]}
    ocr_pages = sum(len(pages or []) for pages in ready.values_list("ocr_pages", flat=True))
    return {"documents": ready.count(), "failed": len(failed), "chunks": totals["chunks"], "pages": totals["pages"],
            "ocr_pages": ocr_pages}


def _best_chunk(question: str, answer: str, chunks) -> object | None:
    """The chunk that carries an expert answer: the most of its key facts, then the most shared bigrams."""
    from training_app.engine.evaluation import fact_keys

    facts = fact_keys(answer)

    def bigrams(text: str) -> set[str]:
        text = "".join(text.lower().split())
        return {text[i:i + 2] for i in range(len(text) - 1)}

    wanted = bigrams(answer) | bigrams(question)
    best, best_score = None, (-1, -1)
    for chunk in chunks:
        score = (len(facts & fact_keys(chunk.text)), len(wanted & bigrams(chunk.text)))
        if score > best_score:
            best, best_score = chunk, score
    return best


@step("heldout")
def heldout_step(ctx: JobContext, run: PipelineRun) -> dict:
    """A sample's held-out questions become held-out test pairs on their chunk (never trained on).
    For any other domain: the held-out pairs experts marked; none → freeze holds out a share."""
    from datasets_app.models import QAPair
    from datasets_app.services import add_pair
    from domains.models import Chunk

    dataset = run.dataset()
    sample = SAMPLES.get(run.options["sample"])
    created = 0
    if sample is not None:
        rows = sample.heldout()
        existing = set(QAPair.objects.filter(dataset=dataset, held_out=True).values_list("question", flat=True))
        for done, row in enumerate(rows):
            ctx.progress(done, len(rows))
            if row["question"] in existing:
                continue
            chunk = None
            if row.get("source"):
                chunks = Chunk.objects.for_domain(run.domain).filter(document__filename__startswith=Path(
                    row["source"]).stem)
                chunk = _best_chunk(row["question"], row["answer"], chunks)
            add_pair(dataset=dataset, by=run.by, question=row["question"], answer=row["answer"], chunk=chunk,
                     held_out=True, approve=True, source=QAPair.Source.MANUAL)
            created += 1
    held = QAPair.objects.filter(dataset=dataset, held_out=True, status=QAPair.Status.APPROVED).count()
    if held:
        ctx.log(f"{held} held-out test question(s)")
    else:
        ctx.log(f"no held-out questions marked: freezing holds out {run.options['test_fraction']:.0%} of the pairs")
    return {"imported": created, "heldout": held}


@step("approve")
def approve_step(ctx: JobContext, run: PipelineRun) -> dict:
    """Demo mode approves every pending pair (and says so everywhere); otherwise experts' approvals are used."""
    from datasets_app.models import QAPair
    from datasets_app.services import EditConflict, review_pair

    from domains import audit

    dataset = run.dataset()
    pending = QAPair.objects.filter(dataset=dataset, status=QAPair.Status.PENDING)
    if run.options["demo"]:
        pairs = list(pending.order_by("pk"))
        approved = 0
        for done, pair in enumerate(pairs):
            ctx.progress(done, len(pairs))
            try:
                review_pair(pair, by=run.by, action="approve", expected_version=pair.version, reason=DEMO_NOTE,
                            audited=False)
                approved += 1
            except EditConflict:
                continue
        Domain.objects.filter(pk=run.domain.pk).update(demo_mode=True)
        audit.record(domain=run.domain, by=run.by, action="pair.bulk_review",
                     summary=f"approve: {approved} pair(s) ({DEMO_NOTE})", review="approve", count=approved, demo=True)
        ctx.log(f"demo mode: {approved} pair(s) approved without expert review")
    trainable = QAPair.objects.filter(dataset=dataset, status=QAPair.Status.APPROVED, held_out=False).count()
    if not trainable:
        raise StageError(f"No approved QA pairs to train on ({pending.count()} wait for review): approve them in "
                         f"the review queue, then resume the pipeline.")
    return {"approved": trainable, "pending": pending.count(), "demo": run.options["demo"]}


@step("freeze")
def freeze_step(ctx: JobContext, run: PipelineRun) -> dict:
    from datasets_app.models import QAPair
    from datasets_app.versions import freeze_dataset

    dataset = run.dataset()
    held = QAPair.objects.filter(dataset=dataset, held_out=True, status=QAPair.Status.APPROVED).exists()
    try:
        outcome = freeze_dataset(dataset=dataset, by=run.by, note="pipeline",
                                 test_fraction=0.0 if held else run.options["test_fraction"])
    except ValueError as exc:
        raise StageError(str(exc)) from None
    version = outcome.version
    return {"dataset_version": version.pk, "number": version.number, "counts": version.counts,
            "created": outcome.created}


@step("promote_embedding")
def promote_embedding_step(ctx: JobContext, run: PipelineRun) -> dict:
    """The fine-tuned embedding model serves retrieval only if it retrieves at least as well as before."""
    from training_app.promotion import gate_for, promote_version

    version = run.model("embedding", "embedding")
    gate = gate_for(version)
    table = {row["name"]: row for row in ((version.metrics or {}).get("retrieval") or {}).get("table", [])}
    out = {"model_version": version.pk, "number": version.number, "promoted": False, "reasons": gate.reasons,
           "table": table}
    if gate.allowed:
        promote_version(version=version, by=run.by, reason="pipeline: retrieves at least as well as its base")
        out["promoted"] = True
        ctx.log(f"embedding v{version.number} promoted")
    else:
        ctx.log(f"embedding v{version.number} not promoted: {' '.join(map(str, gate.reasons))}")
    return out


RANKING = ("accuracy", "key_fact_recall", "rouge_l")
CONFIG_MODE = {"model_rag": "grounded", "model": "model_only", "extractive": "extractive"}


def best_configuration(results: dict) -> str | None:
    """The configuration to serve: highest accuracy, then key-fact recall, then ROUGE-L; fewer
    hallucinations break a tie; on a full tie the retrieval-grounded fine-tuned model."""
    preference = ["model_rag", "extractive", "model", "base_rag", "base"]

    def key(name: str):
        row = results[name]
        return (*(row.get(m) or 0.0 for m in RANKING), -(row.get("hallucination_rate") or 0.0),
                -preference.index(name) if name in preference else -99)

    return max(results, key=key) if results else None


@step("promote")
def promote_step(ctx: JobContext, run: PipelineRun) -> dict:
    """Serve what measured best. The fine-tuned model becomes active only through the promotion gate;
    a base-model configuration winning is reported as it is (the base model is not a version to serve)."""
    from inference_app.models import Deployment
    from inference_app.serving import deployment_for
    from training_app.models import EvaluationRun
    from training_app.promotion import gate_for, promote_version

    version = run.model("sft", "sft")
    pk = run.output("evaluate", "evaluation")
    evaluation = EvaluationRun.objects.filter(domain=run.domain, pk=pk).first() if pk else \
        EvaluationRun.objects.filter(domain=run.domain, model_version=version).order_by("-pk").first()
    if evaluation is None or not evaluation.results:
        raise StageError("There is no finished evaluation of the fine-tuned model: run the evaluate stage first.")
    best = best_configuration(evaluation.results)
    gate = gate_for(version)
    out = {"evaluation": evaluation.pk, "best": best, "model_version": version.pk, "number": version.number,
           "gate": gate.allowed, "reasons": [str(r) for r in gate.reasons], "promoted": False}
    deployment = deployment_for(run.domain)
    # The chat serves the configuration as it was measured.
    deployment.k = int(evaluation.options.get("k") or deployment.k)
    if evaluation.options.get("threshold") is not None:
        deployment.threshold = float(evaluation.options["threshold"])
    if best in ("model_rag", "model") and gate.allowed:
        promote_version(version=version, by=run.by, reason=f"pipeline: best configuration {best}")
        out["promoted"] = True
        deployment.mode = CONFIG_MODE[best]
    elif best in ("model_rag", "model"):
        deployment.mode = Deployment.Mode.EXTRACTIVE
        ctx.log(f"v{version.number} measured best but the gate refused it: {' '.join(out['reasons'])}")
    else:
        deployment.mode = CONFIG_MODE.get(best, Deployment.Mode.EXTRACTIVE)
        ctx.log(f"{best} measured best: the fine-tuned model is not promoted; the chat answers extractively")
    deployment.save(update_fields=["mode", "k", "threshold"])
    out["mode"] = deployment.mode
    return out


@step("serve")
def serve_step(ctx: JobContext, run: PipelineRun) -> dict:
    """The chat is ready: one held-out question asked through the serving path, its answer and citations kept."""
    from django.urls import reverse

    from datasets_app.models import QAPair
    from inference_app.serving import ServingError, ask, deployment_for

    deployment = deployment_for(run.domain)
    pair = QAPair.objects.filter(dataset=run.dataset(), held_out=True, chunk__isnull=False).order_by("pk").first()
    question = pair.question if pair else None
    out = {"url": reverse("chat", args=[run.domain.slug]), "mode": deployment.mode}
    if question:
        try:
            answer, engine = ask(domain=run.domain, question=question)
        except ServingError as exc:
            raise StageError(f"The chat cannot answer yet: {exc}") from None
        out.update(question=question, answer=answer.text, covered=answer.covered, model=answer.model_id,
                   citations=[{"document": c.document, "page": c.page, "quote": c.quote[:160]}
                              for c in answer.citations[:3]])
        ctx.log(f"asked: {question} → {answer.text[:120]}")
    return out


# Sample domains -------------------------------------------------------------------------------


def add_sample_documents(*, domain: Domain, sample: str, by, scan_pages: int | None = None) -> list:
    """Upload a sample's documents to ``domain``; the ones meant as scans go as image-only PDFs.
    ``scan_pages`` keeps only the first pages of a scan (the tests' short path). Uploading again
    changes nothing (documents are stored by content)."""
    import tempfile

    from django.core.files import File

    from domains.engine.samples import render_scanned_pdf
    from domains.services import upload_documents

    spec = SAMPLES[sample]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="vsm-sample-") as tmp:
        for name in spec.documents:
            source = spec.path / name
            if name in spec.scanned:
                path = Path(tmp) / f"{source.stem}.pdf"
                render_scanned_pdf(source.read_text(encoding="utf-8"), path, max_pages=scan_pages)
            else:
                path = source
            with open(path, "rb") as fh:
                outcomes += upload_documents(domain=domain, files=[File(fh, name=path.name)], uploaded_by=by)
    return outcomes


def sample_domain(*, sample: str, slug: str, owner, scan_pages: int | None = None,
                  chunk_chars: int | None = None) -> tuple[Domain, bool]:
    """The domain ``slug`` with the sample's documents (created with ``owner`` as its owner if missing)."""
    from domains.models import Membership, Role
    from domains.services import create_domain

    spec = SAMPLES[sample]
    domain = Domain.objects.filter(slug=slug).first()
    created = domain is None
    if created:
        domain = create_domain(owner=owner, slug=slug, name=spec.name, description=spec.description,
                               language=spec.language)
    else:
        Membership.objects.get_or_create(domain=domain, user=owner, defaults={"role": Role.OWNER})
    if not Document.objects.for_domain(domain).exists():  # new, or the empty demo domain bootstrap made
        size = chunk_chars or spec.chunk_chars
        Domain.objects.filter(pk=domain.pk).update(
            name=spec.name if not created and domain.name == "Demo domain" else domain.name,
            language=spec.language, chunk_target_chars=size, chunk_overlap_chars=min(spec.chunk_overlap, size // 10))
        domain.refresh_from_db()
    add_sample_documents(domain=domain, sample=sample, by=owner, scan_pages=scan_pages)
    return domain, created


# Reading the outcome ---------------------------------------------------------------------------

TABLE_METRICS = [("accuracy", "accuracy"), ("key_fact_recall", "key facts"), ("rouge_l", "ROUGE-L"),
                 ("hallucination_rate", "hallucinated"), ("correct_refusal_rate", "right refusals"),
                 ("context_recall", "context recall")]


def evaluation_rows(evaluation) -> list[dict]:
    """One row per configuration, in the order the evaluation ran them."""
    rows = []
    for name in evaluation.configurations:
        result = (evaluation.results or {}).get(name)
        if result is None:
            continue
        rows.append({"configuration": name, "items": result.get("items"),
                     **{key: result.get(key) for key, _label in TABLE_METRICS}})
    return rows


def format_table(rows: list[dict], best: str | None = None) -> str:
    """A plain-text table for terminals and logs."""
    def cell(value) -> str:
        return "—" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))

    header = ["configuration", "n", *[label for _key, label in TABLE_METRICS]]
    body = [[r["configuration"] + (" *" if r["configuration"] == best else ""), cell(r["items"]),
             *[cell(r[key]) for key, _label in TABLE_METRICS]] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def outcome_of(job: Job) -> dict:
    """Stage records, the evaluation table and the served chat of a pipeline job, for a report."""
    from training_app.models import EvaluationRun

    stages = (job.result or {}).get("stages") or {}
    out = {"stages": [{"name": name, "label": stage_label(name), **stages[name]}
                      for name in STAGE_NAMES if name in stages]}
    evaluation_id = (stages.get("evaluate") or {}).get("evaluation")
    evaluation = EvaluationRun.objects.filter(pk=evaluation_id, domain_id=job.domain_id).first() \
        if evaluation_id else None
    if evaluation is not None:
        out["evaluation"] = {"id": evaluation.pk, "rows": evaluation_rows(evaluation),
                             "best": (stages.get("promote") or {}).get("best")
                             or best_configuration(evaluation.results or {})}
    if stages.get("serve"):
        out["chat"] = stages["serve"]
    return out
