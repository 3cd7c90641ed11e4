"""The serving API: ask a domain (``POST /api/domains/<slug>/ask/``) and an OpenAI-compatible
``/v1/chat/completions`` (streaming and not) and ``/v1/models``, where a model is a domain.

Authentication is the platform's (a domain API key ``Bearer vsm_…``, a user token or a browser
session); a key reaches only its own domain, and any other ``model`` is "not found". Every
request is rate limited per key (the domain's ``Deployment.rate_limit`` per minute) and logged
in ``ApiRequest`` without its text or credentials.
"""
from __future__ import annotations

import json
import time
import uuid

from django.core.cache import cache
from django.http import FileResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from domains import access as gate
from domains.api import SLUG_PARAMETER, DomainAccessMixin, api_errors
from domains.models import ApiKey, Domain, Role
from inference_app import serving
from inference_app.models import ApiRequest, Deployment


# Rate limiting and the request log ----------------------------------------------------------------


def _caller(request) -> tuple[str, ApiKey | None]:
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return f"key:{auth.prefix}", auth
    user = getattr(request, "user", None)
    return (f"user:{user.pk}" if user is not None and user.is_authenticated else
            f"ip:{request.META.get('REMOTE_ADDR', '')}"), None


class PerKeyRateThrottle(BaseThrottle):
    """A fixed one-minute window per API key (or user), ``Deployment.rate_limit`` requests in it.
    Counted in the cache (Redis in production, so every web worker shares the count)."""

    def allow_request(self, request, view):
        who, key = _caller(request)
        domain_id = key.domain_id if key is not None else None
        if domain_id is None:
            access = getattr(view, "access", None)
            domain_id = access.domain.pk if access is not None else None
        limit = (Deployment.objects.filter(domain_id=domain_id).values_list("rate_limit", flat=True).first()
                 if domain_id is not None else None) or Deployment._meta.get_field("rate_limit").default
        window = int(time.time() // 60)
        name = f"vsm-rate:{who}:{window}"
        cache.add(name, 0, timeout=70)
        try:
            count = cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.set(name, 1, timeout=70)
            count = 1
        self._wait = 60 - (time.time() % 60)
        return count <= int(limit)

    def wait(self):
        return getattr(self, "_wait", 60)


def _log(request, domain: Domain | None, endpoint: str, status_code: int, started: float, *, stream: bool = False,
         tokens: int = 0, covered: bool | None = None) -> None:
    if domain is None:
        return
    _who, key = _caller(request)
    ApiRequest.objects.create(domain=domain, api_key=key, endpoint=endpoint, status=status_code, stream=stream,
                              latency_ms=int((time.perf_counter() - started) * 1000), tokens=max(0, int(tokens)),
                              covered=covered)


def count_tokens(generator, text: str) -> int:
    """Tokens of ``text`` in the answering model's tokenizer (a word count when there is none)."""
    if not text:
        return 0
    tok = getattr(generator, "tokenizer", None)
    if tok is not None:
        try:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        except Exception:  # noqa: BLE001 - a count is a nicety, never a failure
            pass
    llm = getattr(generator, "llm", None)
    if llm is not None and hasattr(llm, "tokenize"):
        try:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        except Exception:  # noqa: BLE001
            pass
    return max(1, len(text.split()))


def citation_rows(request, domain: Domain, citations) -> list[dict]:
    """Citations for API clients: the engine's fields plus a link to the document page."""
    rows = []
    for c in citations:
        row = dict(c)
        if row.get("document_id"):
            url = reverse("document-detail", args=[domain.slug, int(row["document_id"])])
            if row.get("page"):
                url += f"#page-{row['page']}"
            row["url"] = request.build_absolute_uri(url)
        rows.append(row)
    return rows


def _version_number(engine: serving.Engine, mode: str):
    return engine.version.number if engine.version is not None and mode != "extractive" else None


# POST /api/domains/<slug>/ask/ ------------------------------------------------------------------


class AskSerializer(serializers.Serializer):
    question = serializers.CharField(max_length=serving.MAX_QUESTION_CHARS, trim_whitespace=True)
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices, required=False,
                                   help_text="grounded (default), model_only or extractive")
    history = serializers.ListField(child=serializers.DictField(), required=False,
                                    help_text="earlier turns [{role, content}] for model_only answers")


class CitationSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    document = serializers.CharField()
    document_id = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    passage_id = serializers.CharField()
    quote = serializers.CharField()
    highlights = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    url = serializers.CharField(required=False)


class AnswerSerializer(serializers.Serializer):
    answer = serializers.CharField()
    covered = serializers.BooleanField()
    mode = serializers.CharField()
    confidence = serializers.FloatField(allow_null=True)
    citations = CitationSerializer(many=True)
    model_version = serializers.IntegerField(allow_null=True)
    model = serializers.CharField()
    timing = serializers.DictField(child=serializers.FloatField())
    demo = serializers.BooleanField(help_text="The domain's QA pairs were approved in demo mode, not by experts.")


def _serving_errors(exc: Exception) -> exceptions.APIException:
    err = exceptions.APIException(str(exc))
    err.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return err


@extend_schema(parameters=[SLUG_PARAMETER], tags=["serving"], request=AskSerializer,
               summary="Ask the domain a question",
               description="Grounded by default: retrieve the domain's passages, answer from them with the active model "
                           "and cite them; below the confidence threshold the answer says the documents do not cover "
                           "the question. Any member or key of the domain may ask.",
               responses={200: AnswerSerializer, 400: OpenApiResponse(description="No question, unknown mode."),
                          429: OpenApiResponse(description="Rate limit of the key reached."),
                          503: OpenApiResponse(description="No index and no model yet, or the model failed.")})
class AskView(DomainAccessMixin, APIView):
    http_method_names = ["post", "options"]
    throttle_classes = [PerKeyRateThrottle]
    write_role = Role.VIEWER  # asking changes nothing

    def post(self, request, *args, **kwargs):
        started = time.perf_counter()
        domain = self.access.domain
        data = AskSerializer(data=request.data)
        if not data.is_valid():
            _log(request, domain, "ask", 400, started)
            raise exceptions.ValidationError(data.errors)
        try:
            with api_errors():
                answer, engine = serving.ask(domain=domain, question=data.validated_data["question"],
                                             mode=data.validated_data.get("mode"),
                                             history=data.validated_data.get("history"))
        except serving.ServingError as exc:
            _log(request, domain, "ask", 503, started)
            raise _serving_errors(exc) from exc
        total = (time.perf_counter() - started) * 1000
        _log(request, domain, "ask", 200, started, tokens=count_tokens(engine.generator, answer.text),
             covered=answer.covered)
        d = answer.to_dict()
        return Response({
            "answer": answer.text, "covered": answer.covered, "mode": answer.mode, "confidence": answer.confidence,
            "citations": citation_rows(request, domain, d["citations"]),
            "model_version": _version_number(engine, answer.mode),
            "model": engine.label if answer.mode != "extractive" else "retrieval only",
            "timing": {"retrieval_ms": d["retrieval_ms"], "generation_ms": d["generation_ms"],
                       "total_ms": round(total, 3)},
            "demo": domain.demo_mode,  # trained on pairs nobody reviewed (the pipeline's demo mode)
        })


# OpenAI-compatible /v1 ----------------------------------------------------------------------------


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant", "tool", "developer"])
    content = serializers.JSONField()


class ChatCompletionSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="the domain's slug (see GET /v1/models)")
    messages = ChatMessageSerializer(many=True, allow_empty=False)
    stream = serializers.BooleanField(default=False)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=8192)
    max_completion_tokens = serializers.IntegerField(required=False, min_value=1, max_value=8192)
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices, required=False,
                                   help_text="VSM extension: grounded (default), model_only or extractive")

    def validate_messages(self, messages):
        for m in messages:
            content = m["content"]
            if isinstance(content, list):  # OpenAI content parts: keep the text parts
                m["content"] = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            elif content is None:
                m["content"] = ""
            elif not isinstance(content, str):
                raise serializers.ValidationError("content must be a string or a list of text parts")
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise serializers.ValidationError("at least one user message is needed")
        return messages


def _domain_for_model(request, model: str) -> Domain:
    try:
        return gate.for_request(request, model, min_role=Role.VIEWER).domain
    except Exception:  # noqa: BLE001 - 404 and 403 alike: a model this caller cannot use does not exist for it
        raise exceptions.NotFound(f"The model {model!r} does not exist or this key cannot use it; "
                                  "GET /v1/models lists the domains you can ask.") from None


def _overrides(data: dict) -> dict:
    out = {}
    if "temperature" in data:
        out["temperature"] = data["temperature"]
    if "top_p" in data and data["top_p"] > 0:
        out["top_p"] = data["top_p"]
    limit = data.get("max_completion_tokens") or data.get("max_tokens")
    if limit:
        out["max_new_tokens"] = limit
    return out


def _sse(payload) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


@extend_schema(tags=["openai-compatible"], request=ChatCompletionSerializer,
               summary="OpenAI-compatible chat completions; `model` names a domain",
               description="The last user message is the question, earlier messages are the history. "
                           "`stream: true` answers as server-sent events (`chat.completion.chunk`, then "
                           "`data: [DONE]`). Each response carries the citations in a `vsm` field.",
               responses={200: OpenApiResponse(description="chat.completion, or an SSE stream of chunks"),
                          404: OpenApiResponse(description="No such model for this key.")})
class ChatCompletionsView(APIView):
    http_method_names = ["post", "options"]
    throttle_classes = [PerKeyRateThrottle]

    def post(self, request, *args, **kwargs):
        started = time.perf_counter()
        data = ChatCompletionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        domain = _domain_for_model(request, v["model"])
        messages = [m for m in v["messages"] if m["role"] in ("user", "assistant") and m["content"].strip()]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        question, history = messages[last_user]["content"], messages[:last_user]
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        try:
            with api_errors():
                if v["stream"]:
                    events, engine = serving.stream(domain=domain, question=question, mode=v.get("mode"),
                                                    history=history, generation=_overrides(v))
                else:
                    answer, engine = serving.ask(domain=domain, question=question, mode=v.get("mode"),
                                                 history=history, generation=_overrides(v))
        except serving.ServingError as exc:
            _log(request, domain, "chat.completions", 503, started, stream=v["stream"])
            raise _serving_errors(exc) from exc
        if v["stream"]:
            response = StreamingHttpResponse(
                self._chunks(request, domain, events, engine, v["model"], completion_id, created, started,
                             question, history),
                content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        d = answer.to_dict()
        prompt_tokens = count_tokens(engine.generator, "\n".join(m["content"] for m in messages))
        tokens = count_tokens(engine.generator, answer.text)
        _log(request, domain, "chat.completions", 200, started, tokens=tokens, covered=answer.covered)
        return Response({
            "id": completion_id, "object": "chat.completion", "created": created, "model": v["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                      "total_tokens": prompt_tokens + tokens},
            "vsm": self._extension(request, domain, d, engine),
        })

    @staticmethod
    def _extension(request, domain, d: dict, engine) -> dict:
        return {"covered": d["covered"], "mode": d["mode"], "confidence": d["confidence"],
                "citations": citation_rows(request, domain, d["citations"]),
                "model_version": _version_number(engine, d["mode"]), "demo": domain.demo_mode}

    def _chunks(self, request, domain, events, engine, model, completion_id, created, started, question, history):
        def chunk(delta: dict, finish=None, **extra):
            return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                         **extra})

        yield chunk({"role": "assistant", "content": ""})
        pieces, final = [], None
        try:
            for event in events:
                if event["type"] == "token":
                    pieces.append(event["text"])
                    yield chunk({"content": event["text"]})
                elif event["type"] == "done":
                    final = event["answer"]
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band, never a broken socket
            _log(request, domain, "chat.completions", 500, started, stream=True)
            yield _sse({"error": {"message": f"Generation failed: {exc}", "type": "server_error"}})
            yield b"data: [DONE]\n\n"
            return
        final = final or {"text": "".join(pieces), "covered": None, "mode": "", "confidence": None,
                          "citations": []}
        tokens = count_tokens(engine.generator, "".join(pieces))
        yield chunk({}, "stop", vsm=self._extension(request, domain, final, engine),
                    usage={"prompt_tokens": count_tokens(engine.generator, question),
                           "completion_tokens": tokens,
                           "total_tokens": count_tokens(engine.generator, question) + tokens})
        yield b"data: [DONE]\n\n"
        _log(request, domain, "chat.completions", 200, started, stream=True, tokens=tokens,
             covered=final.get("covered"))


@extend_schema(tags=["openai-compatible"], summary="The domains this caller can ask, as OpenAI models",
               responses={200: inline_serializer("ModelList", {"object": serializers.CharField(),
                                                                "data": serializers.ListField()})})
class ModelsView(APIView):
    http_method_names = ["get", "options"]

    def get(self, request, *args, **kwargs):
        rows = []
        for domain in gate.domains_for_request(request).order_by("slug"):
            version = serving.active_llm(domain)
            rows.append({"id": domain.slug, "object": "model", "created": int(domain.created_at.timestamp()),
                         "owned_by": "vsm", "name": domain.name,
                         "active_version": version.number if version is not None else None})
        return Response({"object": "list", "data": rows})


__all__ = ["AnswerBatchViewSet", "AskView", "ChatCompletionsView", "ModelsView", "PerKeyRateThrottle"]


# Batch answering -------------------------------------------------------------------------------------


class AnswerBatchSerializer(serializers.ModelSerializer):
    status = serializers.CharField(source="job.status", default=None, read_only=True)
    progress_done = serializers.IntegerField(source="job.progress_done", default=0, read_only=True)
    progress_total = serializers.IntegerField(source="job.progress_total", default=0, read_only=True)
    error = serializers.CharField(source="job.error", default="", read_only=True)
    question_count = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        from inference_app.models import AnswerBatch

        model = AnswerBatch
        fields = ["id", "filename", "mode", "question_count", "answered", "covered", "status", "progress_done",
                  "progress_total", "error", "job", "download_url", "created_at"]

    def get_question_count(self, batch) -> int:
        return len(batch.questions or [])

    def get_download_url(self, batch) -> str | None:
        if batch.result_file is None:
            return None
        request = self.context.get("request")
        url = reverse("api:answer-batch-download", args=[batch.domain.slug, batch.pk])
        return request.build_absolute_uri(url) if request is not None else url


class AnswerBatchStartSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV with a `question` column (else the first column), or text with one "
                                           "question per line; UTF-8 or GBK; at most 2,000 questions, 5 MB")
    mode = serializers.ChoiceField(choices=Deployment.Mode.choices, required=False, allow_blank=True)


@extend_schema(parameters=[SLUG_PARAMETER], tags=["serving"])
class AnswerBatchViewSet(DomainAccessMixin, viewsets.ReadOnlyModelViewSet):
    """Batch answering: upload questions, get a job, download the answers with their citations as CSV."""

    serializer_class = AnswerBatchSerializer
    read_role = Role.VIEWER
    write_role = Role.EXPERT
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        from inference_app.models import AnswerBatch

        if self.schema_only:
            return AnswerBatch.objects.none()
        return AnswerBatch.objects.for_domain(self.access.domain).select_related("domain", "job")

    @extend_schema(summary="Answer a file of questions as a job (experts, read/write keys)",
                   request={"multipart/form-data": AnswerBatchStartSerializer}, responses={202: AnswerBatchSerializer})
    def create(self, request, *args, **kwargs):
        data = AnswerBatchStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > serving.MAX_BATCH_BYTES:
            raise exceptions.ValidationError({"file": [f"The file is larger than {serving.MAX_BATCH_BYTES // 2**20} MB."]})
        with api_errors():
            batch = serving.start_batch(domain=self.access.domain, by=request.user, data=upload.read(),
                                        filename=upload.name or "questions.csv", mode=data.validated_data.get("mode", ""))
        batch = self.get_queryset().get(pk=batch.pk)
        return Response(self.get_serializer(batch).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Download the answers as CSV",
                   responses={(200, "text/csv"): OpenApiTypes.BINARY,
                              404: OpenApiResponse(description="Not answered yet.")})
    @action(detail=True, methods=["get"], url_path="download", url_name="download")
    def download(self, request, *args, **kwargs):
        batch = self.get_object()
        path = batch.result_file
        if path is None:
            raise exceptions.NotFound("The answers are not ready yet: wait for the job to finish.")
        stem = batch.filename.rsplit(".", 1)[0] or "questions"
        response = FileResponse(open(path, "rb"), as_attachment=True, filename=f"{stem}-answers.csv",
                                content_type="text/csv; charset=utf-8")
        response["Cache-Control"] = "private, no-store"
        return response
