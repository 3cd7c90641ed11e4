"""Teacher LLMs that turn prompts into validated JSON: OpenAI-compatible, Gemini, local GGUF.

Why: every recipe (QA pairs, paraphrase, entities, judge) needs the same thing from a
teacher — send a ``Prompt``, get back JSON matching its schema, with usage and the key id
for accounting. Rotation/back-off lives in ``keys.KeyPool``; repair in ``jsonrepair``; a
bounded re-ask (with the parse error) lives here. SDKs are imported inside the functions
that need them so that importing the engine stays cheap.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .jsonrepair import MalformedOutput, excerpt, parse_json_output
from .keys import (
    AllKeysFailed,
    ApiKey,
    Failure,
    FailureKind,
    FatalTeacherError,
    KeyPool,
    KeyPoolConfig,
    KeyPoolError,
    RetriesExhausted,
    make_keys,
)
from .prompts import Prompt, repair_message

logger = logging.getLogger(__name__)

__all__ = [
    "AllKeysFailed", "FatalTeacherError", "GeminiTeacher", "LlamaCppTeacher", "OpenAICompatibleTeacher",
    "RetriesExhausted", "Teacher", "TeacherError", "TeacherResult", "TeacherSettings", "TeacherTask", "Usage",
]


class TeacherError(RuntimeError):
    """A teacher could not produce usable output; the message says what to do."""


@dataclass(frozen=True)
class TeacherTask:
    """One request: the prompt (with its schema) plus per-task overrides."""

    prompt: Prompt
    max_output_tokens: int | None = None  # None = the teacher's setting
    temperature: float | None = None  # None = the teacher's setting
    task_id: str = ""  # e.g. "chunk:123:qa" for logs

    @property
    def schema(self) -> dict[str, Any]:
        return self.prompt.schema


@dataclass(frozen=True)
class Usage:
    """Tokens spent on a task, summed over re-asks."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(frozen=True)
class TeacherResult:
    """Parsed, schema-valid output and where it came from."""

    data: Any
    usage: Usage
    key_id: str | None  # id (never the secret) of the key that answered
    raw_excerpt: str  # start of the raw output, for review and debugging
    model: str = ""
    attempts: int = 1  # 1 + number of re-asks after malformed output
    repairs: tuple[str, ...] = field(default=())  # jsonrepair fixes applied


@runtime_checkable
class Teacher(Protocol):
    """Anything that turns a TeacherTask into a TeacherResult."""

    name: str

    def generate(self, task: TeacherTask) -> TeacherResult: ...


@dataclass(frozen=True)
class TeacherSettings:
    """Generation settings shared by the teachers; stored as JSON with the distill job."""

    temperature: float = 0.3  # low: faithful to the document, still some variety
    timeout_s: float = 60.0  # per HTTP request; a timeout counts as a transient failure
    max_retries: int = 2  # re-asks after malformed output (so at most 3 answers per task)
    max_output_tokens: int = 2048  # enough for ~10 QA pairs; truncation is repaired anyway
    rpm: int | None = None  # requests per minute across all keys (None = unlimited)
    concurrency: int = 4  # simultaneous requests from this teacher

    def pool_config(self, base: KeyPoolConfig | None = None) -> KeyPoolConfig:
        from dataclasses import replace

        return replace(base or KeyPoolConfig(), rpm=self.rpm, concurrency=self.concurrency)


@dataclass
class _Answer:
    """One raw answer from a backend call."""

    text: str
    usage: Usage
    finish_reason: str = ""


def _as_pool(keys: KeyPool | Sequence[ApiKey] | Sequence[str] | None, settings: TeacherSettings,
             pool_config: KeyPoolConfig | None, clock: Callable[[], float] | None,
             sleep: Callable[[float], None] | None, rng: Any, *, allow_keyless: bool, name: str) -> KeyPool:
    if isinstance(keys, KeyPool):
        return keys
    items = list(keys or [])
    api_keys = [k for k in items if isinstance(k, ApiKey)] + make_keys(k for k in items if isinstance(k, str))
    if not api_keys:
        if not allow_keyless:
            raise TeacherError(
                f"No API key for teacher {name!r}. Add one in the teacher settings or set "
                f"VSM_TEACHER_KEYS_{name.upper()} (comma-separated)."
            )
        api_keys = [ApiKey("no-key", "EMPTY")]  # local servers (vLLM, Ollama) ignore the key
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    if sleep is not None:
        kwargs["sleep"] = sleep
    if rng is not None:
        kwargs["rng"] = rng
    return KeyPool(api_keys, settings.pool_config(pool_config), **kwargs)


class _BaseTeacher:
    """Shared re-ask loop: call, repair, validate, re-ask with the error (bounded)."""

    name = "teacher"
    model = ""
    settings: TeacherSettings
    pool: KeyPool | None = None

    def _call(self, task: TeacherTask, messages: list[dict[str, str]]) -> tuple[_Answer, str | None]:
        raise NotImplementedError

    def generate(self, task: TeacherTask) -> TeacherResult:
        messages = task.prompt.messages()
        usage = Usage()
        last_error: MalformedOutput | None = None
        attempts = self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            answer, key_id = self._call(task, messages)
            usage = usage + answer.usage
            try:
                parsed = parse_json_output(answer.text, task.schema)
            except MalformedOutput as exc:
                last_error = exc
                logger.info("teacher %s task %s: malformed output (attempt %d/%d): %s",
                            self.name, task.task_id or "-", attempt, attempts, exc.reason)
                messages = messages + [
                    {"role": "assistant", "content": answer.text[:4000]},
                    {"role": "user", "content": repair_message(exc.reason, lang=task.prompt.lang)},
                ]
                continue
            return TeacherResult(parsed.value, usage, key_id, excerpt(answer.text), self.model, attempt,
                                 tuple(parsed.repairs))
        assert last_error is not None
        raise TeacherError(
            f"Teacher {self.name} ({self.model}) returned malformed output {attempts} times for task "
            f"{task.task_id or task.prompt.recipe}: {last_error}. Try a stronger model, a lower temperature "
            "or a larger max_output_tokens."
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the job record: settings and key ids, never secrets."""
        from dataclasses import asdict

        return {"teacher": type(self).__name__, "name": self.name, "model": self.model,
                "base_url": getattr(self, "base_url", None), "settings": asdict(self.settings),
                "keys": self.pool.key_ids if self.pool else []}

    def usage(self) -> dict[str, Any]:
        """Per-key request/token accounting for the job."""
        return self.pool.usage() if self.pool else {"keys": {}, "totals": {}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, pool={self.pool!r})"


# --------------------------------------------------------------------------- OpenAI-compatible


def _header(exc: Any, name: str) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        return headers.get(name) if headers is not None else None
    except Exception:  # noqa: BLE001
        return None


def _retry_after(exc: Any) -> float | None:
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = _header(exc, name)
        if value:
            try:
                return float(value) / div
            except ValueError:
                continue
    return None


def _openai_error_code(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("code") or err.get("type") or err.get("status") or "")
    return str(getattr(exc, "code", "") or "")


_QUOTA_WORDS = ("insufficient_quota", "quota_exceeded", "quota exceeded", "exceeded your current quota",
                "billing", "resource_exhausted", "余额不足", "arrearage")


def classify_openai_error(exc: BaseException) -> Failure | None:
    """Map an ``openai`` exception to a pool Failure (None: not an API error, re-raise)."""
    import openai

    msg = str(getattr(exc, "message", "") or exc)[:300]
    if isinstance(exc, openai.APITimeoutError):
        return Failure(FailureKind.TIMEOUT, "request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(FailureKind.CONNECTION, f"connection error: {msg}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = _openai_error_code(exc).lower()
        low = f"{code} {msg}".lower()
        if status == 429:
            if any(w in low for w in _QUOTA_WORDS):
                return Failure(FailureKind.QUOTA_EXHAUSTED, f"quota exhausted ({code or 429})")
            return Failure(FailureKind.RATE_LIMITED, "rate limited (429)", _retry_after(exc))
        if status in (401, 403):
            return Failure(FailureKind.INVALID_KEY, f"key rejected ({status}): {msg}")
        if status == 402:
            return Failure(FailureKind.QUOTA_EXHAUSTED, f"payment required (402): {msg}")
        if status in (408, 409) or status >= 500:
            return Failure(FailureKind.SERVER_ERROR, f"server error ({status})", _retry_after(exc))
        if status == 404:
            return Failure(FailureKind.FATAL, f"model or endpoint not found (404): {msg}")
        return Failure(FailureKind.FATAL, f"request rejected ({status}): {msg}")
    return None


# Tried in order until the server accepts one. "json_object_schema" is llama.cpp's form (its
# server answers json_schema with HTTP 500 but builds a grammar from a json_object's schema).
_FORMAT_MODES = ("json_schema", "json_object_schema", "json_object", "plain")


class OpenAICompatibleTeacher(_BaseTeacher):
    """Any OpenAI-compatible chat API (OpenAI, DeepSeek, DashScope, Zhipu, vLLM, Ollama).

    Asks for ``json_schema`` output; if the server rejects that, falls back to ``json_object``
    and then to plain text, remembering what works (repair + validation catch the rest).
    """

    def __init__(self, base_url: str | None, model: str, keys: KeyPool | Sequence[ApiKey] | Sequence[str] | None,
                 temperature: float = TeacherSettings.temperature, timeout: float = TeacherSettings.timeout_s,
                 max_retries: int = TeacherSettings.max_retries, rpm: int | None = TeacherSettings.rpm,
                 concurrency: int = TeacherSettings.concurrency, *, name: str = "openai",
                 max_output_tokens: int = TeacherSettings.max_output_tokens, response_format: str = "json_schema",
                 pool_config: KeyPoolConfig | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None, rng: Any = None,
                 client_factory: Callable[[ApiKey], Any] | None = None) -> None:
        if response_format not in _FORMAT_MODES:
            raise ValueError(f"response_format must be one of {_FORMAT_MODES}")
        self.name = name
        self.base_url = base_url
        self.model = model
        self.settings = TeacherSettings(temperature=temperature, timeout_s=timeout, max_retries=max_retries,
                                        max_output_tokens=max_output_tokens, rpm=rpm, concurrency=concurrency)
        self.pool = _as_pool(keys, self.settings, pool_config, clock, sleep, rng,
                             allow_keyless=bool(base_url), name=name)
        self.response_format = response_format
        self._client_factory = client_factory or self._make_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _make_client(self, key: ApiKey) -> Any:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
            raise TeacherError("The openai package is missing: pip install -r requirements.txt") from exc
        # max_retries=0: the key pool does retries, rotating keys and honouring Retry-After.
        return openai.OpenAI(api_key=key.reveal(), base_url=self.base_url or None,
                             timeout=self.settings.timeout_s, max_retries=0)

    def _client(self, key: ApiKey) -> Any:
        with self._lock:
            if key.id not in self._clients:
                self._clients[key.id] = self._client_factory(key)
            return self._clients[key.id]

    def _format(self, task: TeacherTask) -> dict[str, Any] | None:
        if self.response_format == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": task.prompt.schema_name,
                                                           "schema": task.schema, "strict": True}}
        if self.response_format == "json_object_schema":
            return {"type": "json_object", "schema": task.schema}
        if self.response_format == "json_object":
            return {"type": "json_object"}
        return None

    def _downgrade(self, exc: BaseException) -> bool:
        """True when the server rejected response_format and a simpler mode is left to try."""
        import openai

        # 400/422 is the usual refusal; llama.cpp's server answers an unsupported format with 500.
        if not isinstance(exc, openai.BadRequestError) and getattr(exc, "status_code", None) not in (400, 422, 500):
            return False
        low = str(exc).lower()
        if not any(w in low for w in ("response_format", "json_schema", "json_object", "structured", "schema")):
            return False
        idx = _FORMAT_MODES.index(self.response_format)
        if idx + 1 >= len(_FORMAT_MODES):
            return False
        self.response_format = _FORMAT_MODES[idx + 1]
        logger.warning("teacher %s: server rejected response_format; falling back to %s",
                       self.name, self.response_format)
        return True

    def _call(self, task: TeacherTask, messages: list[dict[str, str]]) -> tuple[_Answer, str | None]:
        pool = self.pool
        assert pool is not None

        def once(key: ApiKey) -> tuple[_Answer, str]:
            while True:
                kwargs: dict[str, Any] = {
                    "model": self.model,
                    "messages": messages,
                    "temperature": self.settings.temperature if task.temperature is None else task.temperature,
                    "max_tokens": task.max_output_tokens or self.settings.max_output_tokens,
                }
                fmt = self._format(task)
                if fmt is not None:
                    kwargs["response_format"] = fmt
                try:
                    resp = self._client(key).chat.completions.create(**kwargs)
                except Exception as exc:
                    if self._downgrade(exc):
                        continue
                    raise
                break
            choice = resp.choices[0] if getattr(resp, "choices", None) else None
            text = (getattr(getattr(choice, "message", None), "content", None) or "") if choice else ""
            u = getattr(resp, "usage", None)
            usage = Usage(int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0))
            pool.add_tokens(key, usage.prompt_tokens, usage.completion_tokens)
            return _Answer(text, usage, str(getattr(choice, "finish_reason", "") or "")), key.id

        try:
            return pool.run(once, classify_openai_error)
        except FatalTeacherError as exc:
            raise TeacherError(
                f"Teacher {self.name} ({self.model} at {self.base_url or 'api.openai.com'}) refused the request: "
                f"{exc}. Check the model name and base URL in the teacher settings."
            ) from None


# --------------------------------------------------------------------------- Gemini


def classify_gemini_error(exc: BaseException) -> Failure | None:
    """Map a ``google-genai`` exception to a pool Failure (None: re-raise)."""
    try:
        from google.genai import errors
    except ImportError:  # pragma: no cover
        errors = None  # type: ignore[assignment]
    name = type(exc).__name__.lower()
    if "timeout" in name or isinstance(exc, TimeoutError):
        return Failure(FailureKind.TIMEOUT, "request timed out")
    if errors is not None and isinstance(exc, errors.APIError):
        code = int(getattr(exc, "code", 0) or 0)
        status = str(getattr(exc, "status", "") or "")
        msg = str(getattr(exc, "message", "") or "")[:300]
        low = f"{status} {msg}".lower()
        if code == 429 or status == "RESOURCE_EXHAUSTED":
            # Gemini says RESOURCE_EXHAUSTED both for per-minute limits and for spent quota;
            # only a per-minute limit is worth waiting for on the same key.
            if "per minute" in low or "perminute" in low or "rate limit" in low:
                return Failure(FailureKind.RATE_LIMITED, "rate limited (RESOURCE_EXHAUSTED per minute)",
                               _retry_after(exc))
            return Failure(FailureKind.QUOTA_EXHAUSTED, f"quota exhausted (RESOURCE_EXHAUSTED): {msg}")
        if code in (401, 403) or status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return Failure(FailureKind.INVALID_KEY, f"key rejected ({code} {status})")
        if code == 400 and "api key" in low:
            return Failure(FailureKind.INVALID_KEY, f"key rejected ({code} {status})")
        if code in (408, 409) or code >= 500:
            return Failure(FailureKind.SERVER_ERROR, f"server error ({code} {status})", _retry_after(exc))
        return Failure(FailureKind.FATAL, f"request rejected ({code} {status}): {msg}")
    if "connect" in name:
        return Failure(FailureKind.CONNECTION, f"connection error: {exc}"[:300])
    return None


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema minus keywords Gemini's response_schema rejects (additionalProperties …)."""
    drop = {"additionalProperties", "$schema", "$id", "title", "minLength", "maxLength"}
    if isinstance(schema, dict):
        return {k: gemini_schema(v) for k, v in schema.items() if k not in drop}
    if isinstance(schema, list):
        return [gemini_schema(v) for v in schema]  # type: ignore[return-value]
    return schema


class GeminiTeacher(_BaseTeacher):
    """Gemini through ``google-genai`` with a native response schema."""

    def __init__(self, model: str, keys: KeyPool | Sequence[ApiKey] | Sequence[str] | None,
                 temperature: float = TeacherSettings.temperature, timeout: float = TeacherSettings.timeout_s,
                 max_retries: int = TeacherSettings.max_retries, rpm: int | None = TeacherSettings.rpm,
                 concurrency: int = TeacherSettings.concurrency, *, name: str = "gemini",
                 max_output_tokens: int = TeacherSettings.max_output_tokens,
                 pool_config: KeyPoolConfig | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None, rng: Any = None,
                 client_factory: Callable[[ApiKey], Any] | None = None) -> None:
        self.name = name
        self.model = model
        self.settings = TeacherSettings(temperature=temperature, timeout_s=timeout, max_retries=max_retries,
                                        max_output_tokens=max_output_tokens, rpm=rpm, concurrency=concurrency)
        self.pool = _as_pool(keys, self.settings, pool_config, clock, sleep, rng, allow_keyless=False, name=name)
        self._client_factory = client_factory or self._make_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _make_client(self, key: ApiKey) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:  # pragma: no cover - pinned in requirements.txt
            raise TeacherError("The google-genai package is missing: pip install -r requirements.txt") from exc
        options = types.HttpOptions(timeout=int(self.settings.timeout_s * 1000),
                                    retry_options=types.HttpRetryOptions(attempts=1))  # the pool retries
        return genai.Client(api_key=key.reveal(), http_options=options)

    def _client(self, key: ApiKey) -> Any:
        with self._lock:
            if key.id not in self._clients:
                self._clients[key.id] = self._client_factory(key)
            return self._clients[key.id]

    def _call(self, task: TeacherTask, messages: list[dict[str, str]]) -> tuple[_Answer, str | None]:
        from google.genai import types

        pool = self.pool
        assert pool is not None
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                    for m in messages if m["role"] != "system"]
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=self.settings.temperature if task.temperature is None else task.temperature,
            max_output_tokens=task.max_output_tokens or self.settings.max_output_tokens,
            response_mime_type="application/json",
            response_schema=gemini_schema(task.schema),
        )

        def once(key: ApiKey) -> tuple[_Answer, str]:
            resp = self._client(key).models.generate_content(model=self.model, contents=contents, config=config)
            answer = gemini_answer(resp)
            pool.add_tokens(key, answer.usage.prompt_tokens, answer.usage.completion_tokens)
            return answer, key.id

        try:
            return pool.run(once, classify_gemini_error)
        except FatalTeacherError as exc:
            raise TeacherError(
                f"Teacher {self.name} ({self.model}) refused the request: {exc}. Check the model name."
            ) from None


def gemini_answer(resp: Any) -> _Answer:
    """Text, usage and finish reason from a ``GenerateContentResponse``."""
    text = ""
    finish = ""
    for cand in getattr(resp, "candidates", None) or []:
        parts = getattr(getattr(cand, "content", None), "parts", None) or []
        text = "".join(getattr(p, "text", None) or "" for p in parts if not getattr(p, "thought", False))
        finish = str(getattr(cand, "finish_reason", "") or "")
        break
    meta = getattr(resp, "usage_metadata", None)
    usage = Usage(int(getattr(meta, "prompt_token_count", 0) or 0),
                  int(getattr(meta, "candidates_token_count", 0) or 0)
                  + int(getattr(meta, "thoughts_token_count", 0) or 0))
    return _Answer(text, usage, finish)


# --------------------------------------------------------------------------- llama.cpp

LLAMA_CPP_INSTALL_HINT = (
    "llama-cpp-python is not installed, so a local GGUF teacher cannot run. Install it with "
    "`pip install llama-cpp-python` (it compiles llama.cpp, which takes several minutes; add "
    "CMAKE_ARGS=\"-DGGML_CUDA=on\" for a GPU build), or pick the offline structure teacher or an API teacher."
)


class LlamaCppTeacher(_BaseTeacher):
    """A local GGUF model through llama-cpp-python, with grammar-constrained JSON output."""

    def __init__(self, model_path: str, temperature: float = TeacherSettings.temperature,
                 max_retries: int = TeacherSettings.max_retries, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, max_output_tokens: int = TeacherSettings.max_output_tokens,
                 name: str = "llama_cpp", llm: Any = None) -> None:
        self.name = name
        self.model = model_path
        self.model_path = model_path
        self.settings = TeacherSettings(temperature=temperature, max_retries=max_retries,
                                        max_output_tokens=max_output_tokens, concurrency=1)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self._llm = llm
        self._lock = threading.Lock()  # a Llama instance is not thread-safe
        self._stats = {"requests": 0, "successes": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise TeacherError(LLAMA_CPP_INSTALL_HINT) from None
            try:
                self._llm = Llama(model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                  n_gpu_layers=self.n_gpu_layers, verbose=False)
            except (ValueError, OSError) as exc:
                raise TeacherError(f"Could not load GGUF model {self.model_path}: {exc}") from None
        return self._llm

    def _call(self, task: TeacherTask, messages: list[dict[str, str]]) -> tuple[_Answer, str | None]:
        with self._lock:
            llm = self._load()
            resp = llm.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": task.schema},
                temperature=self.settings.temperature if task.temperature is None else task.temperature,
                max_tokens=task.max_output_tokens or self.settings.max_output_tokens,
            )
        choice = (resp.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        u = resp.get("usage") or {}
        usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
        with self._lock:
            self._stats["requests"] += 1
            self._stats["successes"] += 1
            self._stats["prompt_tokens"] += usage.prompt_tokens
            self._stats["completion_tokens"] += usage.completion_tokens
        return _Answer(text, usage, str(choice.get("finish_reason") or "")), None

    def usage(self) -> dict[str, Any]:
        """The same shape as a key pool's accounting, under the one local "key" (the model file)."""
        with self._lock:
            stats = {**self._stats, "failures": 0, "failures_by_kind": {}, "set_aside": None}
        totals = {f: stats[f] for f in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens")}
        return {"keys": {"local": stats} if stats["requests"] else {}, "totals": {**totals, "keys_set_aside": 0}}


__all__ += ["KeyPoolError", "classify_gemini_error", "classify_openai_error", "gemini_answer", "gemini_schema"]
