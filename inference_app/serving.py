"""Serving workflows: answer a domain's questions in its chat, API and batch jobs.

One place decides *what answers*: the domain's ``Deployment`` (mode, k, threshold, generation
settings, backend) with its active LLM version (the newest GGUF export of it through llama.cpp
when one exists and llama-cpp-python is installed, else transformers with base + adapter), or a
remote OpenAI-compatible server. Loaded models and indexes are cached per process by the
engine, so requests after the first pay only for generation.

Views, the API and the batch job call these keyword-only functions; the engine
(``inference_app.engine.answering``) never sees Django.
"""
from __future__ import annotations

import importlib.util
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from domains.models import Domain
from inference_app import services as retrieval
from inference_app.models import Conversation, Deployment, Feedback, Message

MAX_QUESTION_CHARS = 4000
MAX_HISTORY_TURNS = 6  # earlier turns given to model-only answers
LLM_KINDS = ("sft", "cpt_sft")


class ServingError(Exception):
    """The domain cannot answer right now (no index, a model that does not load); the message says why."""


def deployment_for(domain: Domain) -> Deployment:
    deployment, _created = Deployment.objects.get_or_create(domain=domain)
    return deployment


def active_llm(domain: Domain):
    from training_app.models import ModelVersion

    return ModelVersion.objects.for_domain(domain).active().filter(kind__in=LLM_KINDS).first()


def gguf_of(version) -> Any:
    """The newest finished GGUF export of a version (quantized first), or None."""
    if version is None:
        return None
    for export in version.exports.order_by("-created_at", "-id"):
        for name in ("quantized", "gguf"):
            path = export.artifact_file(name)
            if path is not None and path.is_file():
                return path
    return None


def settings_of(deployment: Deployment):
    from inference_app.engine.generation import GenerationSettings

    try:
        return GenerationSettings.from_dict(deployment.generation)
    except ValueError as exc:
        raise ServingError(_("The deployment's generation settings are invalid: %(error)s") % {"error": exc}) from exc


def remote_key(deployment: Deployment) -> str:
    from datasets_app import crypto

    return crypto.decrypt(deployment.remote_key_encrypted) if deployment.remote_key_encrypted else ""


@dataclass
class Engine:
    """What answers for a domain right now."""

    deployment: Deployment
    index: Any = None
    encoder: Any = None
    weights: Any = None
    generator: Any = None
    version: Any = None
    label: str = ""
    notes: list[str] = field(default_factory=list)

    def mode_for(self, asked: str | None) -> str:
        """The mode to use: the one asked for (or the deployment's), downgraded to what can run."""
        mode = asked or self.deployment.mode
        if mode not in Deployment.Mode.values:
            raise ValidationError({"mode": _("Unknown mode %(mode)s; use grounded, model_only or extractive.")
                                   % {"mode": mode}})
        if mode != "extractive" and self.generator is None:
            if self.index is None:
                raise ServingError(_("This domain has no active model and no retrieval index yet: build the index "
                                     "on the Retrieval page (or train and activate a model)."))
            return "extractive"
        if mode != "model_only" and self.index is None:
            if self.generator is None:
                raise ServingError(_("Build the domain's retrieval index first (Retrieval page)."))
            return "model_only"
        return mode


def _generator(deployment: Deployment, version) -> tuple[Any, str]:
    from inference_app.engine.generation import GenerationError, RemoteGenerator, load_generator

    backend = deployment.backend
    try:
        if backend == Deployment.Backend.REMOTE:
            return (RemoteGenerator(deployment.remote_url, deployment.remote_model, api_key=remote_key(deployment)),
                    f"{deployment.remote_model} @ {deployment.remote_url}")
        if version is None:
            return None, ""
        gguf = gguf_of(version)
        use_gguf = gguf is not None and (backend == Deployment.Backend.LLAMA_CPP or (
            backend == Deployment.Backend.AUTO and importlib.util.find_spec("llama_cpp") is not None))
        if backend == Deployment.Backend.LLAMA_CPP and gguf is None:
            raise ServingError(_("The llama.cpp backend needs a GGUF export of model v%(n)s: export it first.")
                               % {"n": version.number})
        if use_gguf:
            return load_generator(gguf, backend="llama_cpp"), f"v{version.number} ({gguf.name}, llama.cpp)"
        if version.adapter_path:
            gen = load_generator(str(settings.VSM_DATA_DIR / version.adapter_path), version.base_path or None,
                                 backend="transformers")
        else:
            gen = load_generator(version.base_path, backend="transformers")
        return gen, f"v{version.number} (transformers)"
    except GenerationError as exc:
        raise ServingError(str(exc)) from exc


def engine_for(domain: Domain, *, need_generator: bool = True) -> Engine:
    """The loaded index, encoder and generator of the domain (each cached per process)."""
    from inference_app.engine.index import EncoderError, RetrievalIndexError

    deployment = deployment_for(domain)
    engine = Engine(deployment=deployment)
    row = retrieval.index_for(domain)
    if row.is_built:
        try:
            engine.index = retrieval.loaded_index(row)
            engine.encoder = retrieval._encoder_for(row)
            engine.weights = retrieval.fusion_weights(row)
        except (RetrievalIndexError, EncoderError, OSError) as exc:
            engine.index = None
            engine.notes.append(_("The retrieval index could not be loaded: %(error)s") % {"error": exc})
    engine.version = active_llm(domain)
    if need_generator:
        engine.generator, engine.label = _generator(deployment, engine.version)
    return engine


def _question(text: Any) -> str:
    question = str(text or "").strip()
    if not question:
        raise ValidationError({"question": _("Ask a question.")})
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationError({"question": _("A question may have at most %(n)s characters.")
                               % {"n": MAX_QUESTION_CHARS}})
    return question


def call_kwargs(engine: Engine, mode: str, history, overrides: dict | None):
    from inference_app.engine.generation import GenerationSettings

    gen_settings = settings_of(engine.deployment)
    if overrides:
        try:
            gen_settings = GenerationSettings.from_dict({**gen_settings.to_dict(), **overrides})
        except ValueError as exc:
            raise ValidationError({"generation": str(exc)}) from exc
    return dict(mode=mode, index=engine.index, encoder=engine.encoder, weights=engine.weights,
                generator=engine.generator if mode != "extractive" else None, k=int(engine.deployment.k),
                threshold=float(engine.deployment.threshold), settings=gen_settings,
                history=list(history or [])[-2 * MAX_HISTORY_TURNS:] if mode == "model_only" else None)


def ask(*, domain: Domain, question: str, mode: str | None = None, history=None,
        generation: dict | None = None) -> tuple[Any, Engine]:
    """Answer one question. Returns (engine Answer, the Engine that answered)."""
    from inference_app.engine.answering import answer_question
    from inference_app.engine.generation import GenerationError

    question = _question(question)
    engine = engine_for(domain, need_generator=(mode or deployment_for(domain).mode) != "extractive")
    chosen = engine.mode_for(mode)
    try:
        answer = answer_question(question, **call_kwargs(engine, chosen, history, generation))
    except GenerationError as exc:
        raise ServingError(str(exc)) from exc
    return answer, engine


def stream(*, domain: Domain, question: str, mode: str | None = None, history=None,
           generation: dict | None = None) -> tuple[Iterator[dict], Engine]:
    """Answer one question as events (``retrieved``, ``token``…, ``answer``) from the engine."""
    from inference_app.engine.answering import stream_answer

    question = _question(question)
    engine = engine_for(domain, need_generator=(mode or deployment_for(domain).mode) != "extractive")
    chosen = engine.mode_for(mode)
    return stream_answer(question, **call_kwargs(engine, chosen, history, generation)), engine


# Conversations --------------------------------------------------------------------------------


def history_of(conversation: Conversation) -> list[dict]:
    return [{"role": m.role, "content": m.content}
            for m in conversation.messages.exclude(content="").order_by("created_at", "id")]


def start_conversation(*, domain: Domain, user=None, session_key: str = "", title: str = "") -> Conversation:
    return Conversation.objects.create(domain=domain, user=user if user and user.is_authenticated else None,
                                       session_key=session_key, title=title[:200])


def record_turn(*, conversation: Conversation, question: str, answer, engine: Engine | None,
                seconds: float, error: str = "", endpoint: str = "chat") -> Message:
    """Store the question and its answer (or the error that stopped it) as two messages, and the
    request in the serving log (monitoring counts chat pages and API alike)."""
    from inference_app.api_serving import count_tokens
    from inference_app.models import ApiRequest

    with transaction.atomic():
        Message.objects.create(domain_id=conversation.domain_id, conversation=conversation,
                               role=Message.Role.USER, content=question)
        data = answer.to_dict() if answer is not None else {}
        used_model = engine is not None and bool(data.get("model_id"))  # "" when nothing was generated
        reply = Message.objects.create(
            domain_id=conversation.domain_id, conversation=conversation, role=Message.Role.ASSISTANT,
            content=data.get("text", "").replace("\x00", ""), mode=data.get("mode", ""),
            covered=data.get("covered") if answer is not None else None,
            citations=data.get("citations", []), error=error,
            model_version=engine.version if used_model else None,
            model_label=engine.label if used_model else (_("retrieval only") if answer is not None else ""),
            timing={"retrieval_ms": data.get("retrieval_ms", 0), "generation_ms": data.get("generation_ms", 0),
                    "total_ms": round(seconds * 1000, 1)})
        if not conversation.title:
            conversation.title = question[:80]
        conversation.save(update_fields=["title", "updated_at"])
        ApiRequest.objects.create(
            domain_id=conversation.domain_id, endpoint=endpoint, status=500 if error else 200,
            stream=endpoint.endswith("stream"), latency_ms=int(seconds * 1000), covered=reply.covered,
            tokens=count_tokens(engine.generator, reply.content) if used_model else 0)
    return reply


def turns_before(message: Message) -> tuple[str, list[list[str]]]:
    """(the question an answer replied to, the [user, assistant] turns of its conversation before
    that question); failed answers are left out of the turns."""
    rows = list(message.conversation.messages.filter(id__lt=message.id).order_by("id")
                .values_list("role", "content", "error"))
    question = next((c for r, c, _e in reversed(rows) if r == Message.Role.USER), "")
    turns, pending = [], None
    for role, content, error in rows:
        if role == Message.Role.USER:
            pending = content
        elif role == Message.Role.ASSISTANT and pending is not None and content.strip() and not error:
            turns.append([pending, content])
            pending = None
    return question, turns


def give_feedback(*, message: Message, by, rating: int, correction: str = "") -> Feedback:
    """Thumbs up/down (and a correction) on an answer. A correction becomes a pending QA pair of
    the domain's dataset, on the answer's first cited chunk, for the experts to review; a thumbs-up
    on an answer late in a conversation makes that conversation a pending multi-turn example.
    Either carries the conversation's earlier turns (ShareGPT multi-turn when the version is frozen)."""
    from datasets_app.models import QADataset, QAPair
    from datasets_app.services import add_pair
    from domains.models import Chunk

    if message.role != Message.Role.ASSISTANT:
        raise ValidationError(_("Feedback goes on answers."))
    try:
        rating = int(rating)
    except (TypeError, ValueError):
        rating = 99
    if rating not in (-1, 0, 1):
        raise ValidationError({"rating": _("Rating is 1 (helpful), -1 (not helpful) or 0.")})
    correction = (correction or "").strip()
    user = by if by is not None and by.is_authenticated else None
    with transaction.atomic():
        feedback, _created = Feedback.objects.select_for_update().get_or_create(
            message=message, user=user, defaults={"domain_id": message.domain_id})
        feedback.rating = rating
        question, earlier = turns_before(message)
        keeps_conversation = rating == 1 and not correction and earlier and feedback.pair_id is None \
            and message.content.strip() and not message.error
        if (correction and correction != feedback.correction) or keeps_conversation:
            chunk_ids = [c.get("passage_id") for c in message.citations or []]
            chunk = Chunk.objects.filter(domain_id=message.domain_id,
                                         pk__in=[int(i) for i in chunk_ids if str(i).isdigit()][:1]).first()
            dataset = (QADataset.objects.filter(domain_id=message.domain_id).order_by("id").first()
                       or QADataset.objects.create(domain_id=message.domain_id, name="main"))
            pair = add_pair(dataset=dataset, by=user, question=question or _("(question not recorded)"),
                            answer=correction or message.content, chunk=chunk, source=QAPair.Source.FEEDBACK,
                            history=earlier)
            feedback.pair = pair
            feedback.correction = correction
        feedback.save()
    return feedback


def new_public_token() -> str:
    return secrets.token_urlsafe(24)


def set_public(deployment: Deployment, on: bool) -> Deployment:
    deployment.public = bool(on)
    if on and not deployment.public_token:
        deployment.public_token = new_public_token()
    deployment.save(update_fields=["public", "public_token", "updated_at"])
    return deployment


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# Batch answering -------------------------------------------------------------------------------

MAX_BATCH_QUESTIONS = 2000
MAX_BATCH_BYTES = 5 * 1024 * 1024
QUESTION_COLUMNS = ("question", "questions", "query", "问题", "提问")


def read_questions(data: bytes, filename: str = "questions.csv") -> list[str]:
    """Questions from a CSV (a ``question`` column, else the first one) or a text file with one per
    line. Encodings are detected (UTF-8, UTF-8 with BOM, GBK from Excel…). Refuses what it cannot use."""
    import csv
    import io

    from charset_normalizer import from_bytes

    if not data:
        raise ValidationError({"file": _("The file is empty.")})
    if len(data) > MAX_BATCH_BYTES:
        raise ValidationError({"file": _("The file is larger than %(mb)s MB.") % {"mb": MAX_BATCH_BYTES // 2**20}})
    if b"\x00" in data[:4096]:
        raise ValidationError({"file": _("This is not a text or CSV file.")})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        best = from_bytes(data).best()
        if best is None:
            raise ValidationError({"file": _("The file's text encoding could not be recognised; save it as UTF-8.")}) \
                from None
        text = str(best)
    if not text.strip():
        raise ValidationError({"file": _("The file has no questions.")})
    name = filename.lower()
    if name.endswith(".csv") or (not name.endswith(".txt") and "," in text.splitlines()[0]):
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
        if not rows:
            raise ValidationError({"file": _("The file has no questions.")})
        header = [c.strip().lower() for c in rows[0]]
        column = next((header.index(c) for c in QUESTION_COLUMNS if c in header), None)
        if column is None:
            column, body = 0, rows
        else:
            body = rows[1:]
        questions = [r[column].strip() for r in body if len(r) > column and r[column].strip()]
    else:
        questions = [line.strip() for line in text.splitlines() if line.strip()]
    if not questions:
        raise ValidationError({"file": _("The file has no questions.")})
    if len(questions) > MAX_BATCH_QUESTIONS:
        raise ValidationError({"file": _("At most %(n)s questions per batch; this file has %(m)s.")
                               % {"n": MAX_BATCH_QUESTIONS, "m": len(questions)}})
    too_long = next((i for i, q in enumerate(questions, 1) if len(q) > MAX_QUESTION_CHARS), None)
    if too_long:
        raise ValidationError({"file": _("Question %(i)s is longer than %(n)s characters.")
                               % {"i": too_long, "n": MAX_QUESTION_CHARS}})
    return questions


def start_batch(*, domain: Domain, by, data: bytes, filename: str, mode: str = ""):
    """A batch of questions answered as a job (``answer_batch``)."""
    from domains.jobs import enqueue_job
    from inference_app.models import AnswerBatch

    if mode and mode not in Deployment.Mode.values:
        raise ValidationError({"mode": _("Unknown mode %(mode)s; use grounded, model_only or extractive.")
                               % {"mode": mode}})
    questions = read_questions(data, filename)
    with transaction.atomic():
        batch = AnswerBatch.objects.create(domain=domain, filename=filename[:255], questions=questions, mode=mode,
                                           created_by=by if by is not None and by.is_authenticated else None)
        batch.storage_path = f"domains/{domain.slug}/batches/{batch.pk}"
        batch.job = enqueue_job(domain=domain, kind="answer_batch", params={"batch_id": batch.pk}, created_by=by)
        batch.save(update_fields=["storage_path", "job"])
    return batch


CSV_COLUMNS = ("question", "answer", "covered", "mode", "sources", "citations", "model_version", "error")
