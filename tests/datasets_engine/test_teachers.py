"""Teachers against a scripted local OpenAI-compatible server, recorded Gemini objects, fake llama.cpp."""
from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from datasets_app.engine.keys import (
    AllKeysFailed,
    KeyPoolConfig,
    RetriesExhausted,
    make_keys,
)
from datasets_app.engine.prompts import qa_prompt
from datasets_app.engine.teachers import (
    GeminiTeacher,
    LlamaCppTeacher,
    OpenAICompatibleTeacher,
    Teacher,
    TeacherError,
    TeacherTask,
    gemini_schema,
)

SECRETS = ["sk-test-AAAAAAAAAAAAAAAAAAAA1111", "sk-test-BBBBBBBBBBBBBBBBBBBB2222", "sk-test-CCCCCCCCCCCCCCCCCCCC3333"]
GOOD = {"pairs": [{"question": "What does a claim need?", "answer": "An invoice.", "evidence": "needs an invoice"}]}
TASK = TeacherTask(qa_prompt("Reimbursement needs an invoice.", 2), task_id="chunk:1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --------------------------------------------------------------------------- scripted server


class Script:
    """Actions served in order; every request is recorded with the key it used."""

    def __init__(self) -> None:
        self.actions: list[tuple] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def next(self, key: str, body: dict[str, Any]) -> tuple:
        with self.lock:
            self.requests.append({"key": key, "body": body})
            return self.actions.pop(0) if self.actions else ("good", GOOD)

    @property
    def keys(self) -> list[str]:
        return [r["key"] for r in self.requests]


def completion(content: str, prompt_tokens: int = 50, completion_tokens: int = 20) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


def make_handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.path != "/v1/chat/completions":
                self._send(404, error("not found", "invalid_request_error", None))
                return
            action, *args = script.next(key, body)
            if action == "good":
                self._send(200, completion(json.dumps(args[0])))
            elif action == "text":
                self._send(200, completion(args[0]))
            elif action == "429":
                headers = {"Retry-After": str(args[0])} if args and args[0] is not None else {}
                self._send(429, error("Rate limit reached for requests", "requests", "rate_limit_exceeded"), headers)
            elif action == "quota":
                self._send(429, error("You exceeded your current quota, please check your plan and billing details.",
                                      "insufficient_quota", "insufficient_quota"))
            elif action == "401":  # providers echo (part of) the key: it must not reach our messages
                self._send(401, error(f"Incorrect API key provided: {key}.", "invalid_request_error",
                                      "invalid_api_key"))
            elif action == "500":
                self._send(500, error("The server had an error", "server_error", None))
            elif action == "slow":
                time.sleep(args[0])
                self._send(200, completion(json.dumps(GOOD)))
            elif action == "no_schema":
                if body.get("response_format", {}).get("type") == "json_schema":
                    self._send(400, error("response_format json_schema is not supported by this model",
                                          "invalid_request_error", None))
                else:
                    self._send(200, completion(json.dumps(GOOD)))
            elif action == "no_schema_key":  # a server that knows only {"type": "json_object"}
                fmt = body.get("response_format", {})
                if fmt.get("type") == "json_schema" or "schema" in fmt:
                    self._send(400, error("Unrecognized request argument supplied: response_format.schema",
                                          "invalid_request_error", None))
                else:
                    self._send(200, completion(json.dumps(GOOD)))
            elif action == "404":
                self._send(404, error("The model `nope` does not exist", "invalid_request_error", "model_not_found"))
            else:  # pragma: no cover
                self._send(500, error(f"unknown action {action}", "server_error", None))

    return Handler


@pytest.fixture
def server():
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    script.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"  # type: ignore[attr-defined]
    yield script
    httpd.shutdown()
    httpd.server_close()


def make_teacher(server: Script, n_keys: int = 1, **kw: Any) -> tuple[OpenAICompatibleTeacher, FakeClock]:
    clock = FakeClock()
    cfg = kw.pop("pool_config", KeyPoolConfig(base_delay_s=1.0, jitter=0.25, max_delay_s=30.0))
    teacher = OpenAICompatibleTeacher(server.base_url, "test-model", make_keys(SECRETS[:n_keys]),  # type: ignore[attr-defined]
                                      timeout=kw.pop("timeout", 0.4), pool_config=cfg, clock=clock,
                                      sleep=clock.sleep, rng=random.Random(1), **kw)
    return teacher, clock


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for s in SECRETS:
            assert s not in text
            assert s[:12] not in text


# --------------------------------------------------------------------------- OpenAI-compatible


def test_backoff_through_every_failure_then_good_answer(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.actions = [("429", 2), ("429", None), ("500",), ("slow", 1.5), ("text", "Sorry, I can't."), ("good", GOOD)]
    teacher, clock = make_teacher(server)
    assert isinstance(teacher, Teacher)
    result = teacher.generate(TASK)
    assert result.data == GOOD
    assert result.key_id == "key-1 …1111"
    assert result.attempts == 2  # one re-ask after the malformed answer
    assert result.usage.prompt_tokens == 100 and result.usage.completion_tokens == 40
    assert len(server.requests) == 6  # the SDK's own retries are off: the pool does them
    # Delays: Retry-After 2 (never earlier, jitter ≤25%), then 2, 4, 8 s ±25% exponential back-off.
    assert len(clock.sleeps) == 4
    lo_hi = [(2.0, 2.5), (1.5, 2.5), (3.0, 5.0), (6.0, 10.0)]
    for delay, (lo, hi) in zip(clock.sleeps, lo_hi):
        assert lo <= delay <= hi
    # The re-ask carries the parse error and the previous answer.
    last = server.requests[-1]["body"]["messages"]
    assert last[-2] == {"role": "assistant", "content": "Sorry, I can't."}
    assert "no JSON object or array found" in last[-1]["content"]
    assert server.requests[0]["body"]["response_format"]["type"] == "json_schema"
    usage = teacher.usage()["keys"]["key-1 …1111"]
    assert usage["requests"] == 6 and usage["failures"] == 4 and usage["prompt_tokens"] == 100
    assert usage["failures_by_kind"] == {"rate_limited": 2, "server_error": 1, "timeout": 1}
    assert_no_secrets(caplog.text, repr(teacher), repr(result), json.dumps(teacher.usage()))


def test_exhausted_key_is_set_aside_and_the_others_carry_on(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.actions = [("quota",), ("429", None)]
    teacher, clock = make_teacher(server, n_keys=3)
    assert teacher.generate(TASK).key_id == "key-3 …3333"
    assert server.keys == SECRETS  # rotated across all three without waiting
    assert clock.sleeps == []
    second = teacher.generate(TASK)
    assert second.key_id == "key-3 …3333"  # key-2 is cooling down, key-1 set aside
    clock.now += 60  # key-2 is ready again but still has a recent failure: key-3 keeps the work
    assert teacher.generate(TASK).key_id == "key-3 …3333"
    clock.now += 400  # the failure has left the sliding window: the less-used key-2 is picked
    assert teacher.generate(TASK).key_id == "key-2 …2222"
    assert SECRETS[0] not in server.keys[3:]
    usage = teacher.usage()
    assert usage["keys"]["key-1 …1111"]["set_aside"].startswith("quota_exhausted")
    assert usage["totals"]["keys_set_aside"] == 1
    assert "key-1 …1111 set aside" in caplog.text
    assert_no_secrets(caplog.text, json.dumps(usage))


def test_all_keys_failed_says_so_without_secrets(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.actions = [("401",), ("quota",)]
    teacher, _ = make_teacher(server, n_keys=2)
    with pytest.raises(AllKeysFailed) as info:
        teacher.generate(TASK)
    msg = str(info.value)
    assert "All 2 teacher API key(s) are set aside" in msg
    assert "key-1 …1111: invalid_key" in msg and "key-2 …2222: quota_exhausted" in msg
    assert_no_secrets(msg, repr(info.value), repr(info.value.reasons), caplog.text, repr(teacher))
    assert info.value.__cause__ is None
    with pytest.raises(AllKeysFailed):  # stays failed without another request
        teacher.generate(TASK)
    assert len(server.requests) == 2


def test_persistent_server_errors_give_up_with_advice(server):
    server.actions = [("500",)] * 5
    teacher, clock = make_teacher(server, pool_config=KeyPoolConfig(max_attempts=3, jitter=0.0))
    with pytest.raises(RetriesExhausted, match="after 3 attempts.*resume the job later"):
        teacher.generate(TASK)
    assert clock.sleeps == [1.0, 2.0]


def test_falls_back_when_json_schema_is_unsupported(server):
    server.actions = [("no_schema",), ("no_schema",)]
    teacher, _ = make_teacher(server)
    assert teacher.generate(TASK).data == GOOD
    # llama.cpp's form first: a json_object that still carries the schema for its grammar.
    assert teacher.response_format == "json_object_schema"
    assert server.requests[1]["body"]["response_format"] == {"type": "json_object", "schema": TASK.schema}
    assert teacher.usage()["totals"]["failures"] == 0


def test_falls_back_to_plain_json_object_when_the_schema_key_is_refused(server):
    server.actions = [("no_schema_key",), ("no_schema_key",), ("no_schema_key",)]
    teacher, _ = make_teacher(server)
    assert teacher.generate(TASK).data == GOOD
    assert teacher.response_format == "json_object"
    assert server.requests[-1]["body"]["response_format"] == {"type": "json_object"}
    assert len(server.requests) == 3 and teacher.usage()["totals"]["failures"] == 0


def test_malformed_every_time_is_a_clear_error(server):
    server.actions = [("text", "nope")] * 3
    teacher, _ = make_teacher(server, max_retries=2)
    with pytest.raises(TeacherError, match="malformed output 3 times for task chunk:1.*no JSON"):
        teacher.generate(TASK)


def test_truncated_output_keeps_complete_pairs(server):
    text = json.dumps({"pairs": GOOD["pairs"] * 2})[:-30]
    server.actions = [("text", "```json\n" + text)]
    teacher, _ = make_teacher(server)
    result = teacher.generate(TASK)
    assert result.data == GOOD and "truncated output (kept complete items)" in result.repairs


def test_unknown_model_is_fatal_and_actionable(server):
    server.actions = [("404",)]
    teacher, _ = make_teacher(server, n_keys=2)
    with pytest.raises(TeacherError, match="Check the model name and base URL"):
        teacher.generate(TASK)
    assert len(server.requests) == 1


def test_missing_keys_is_actionable():
    with pytest.raises(TeacherError, match="VSM_TEACHER_KEYS_DEEPSEEK"):
        OpenAICompatibleTeacher(None, "deepseek-chat", [], name="deepseek")


# --------------------------------------------------------------------------- Gemini


class FakeModels:
    def __init__(self, outcomes: list[Any], calls: list[dict[str, Any]], key_id: str) -> None:
        self.outcomes, self.calls, self.key_id = outcomes, calls, key_id

    def generate_content(self, *, model: str, contents: Any, config: Any) -> Any:
        self.calls.append({"key": self.key_id, "model": model, "contents": contents, "config": config})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def gemini_response(text: str) -> Any:
    from google.genai import types

    return types.GenerateContentResponse.model_validate({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 150},
    })


def resource_exhausted(message: str) -> Exception:
    from google.genai import errors

    return errors.ClientError(429, {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}})


def gemini_teacher(per_key: dict[str, list[Any]], calls: list[dict[str, Any]], n_keys: int = 2):
    clock = FakeClock()
    keys = make_keys(SECRETS[:n_keys], prefix="gemini")
    teacher = GeminiTeacher("gemini-2.5-flash", keys, clock=clock, sleep=clock.sleep, rng=random.Random(3),
                            client_factory=lambda key: type("C", (), {"models": FakeModels(per_key[key.id], calls,
                                                                                           key.id)})())
    return teacher, clock


def test_gemini_quota_exhausted_key_set_aside_next_key_answers(caplog):
    caplog.set_level(logging.DEBUG)
    calls: list[dict[str, Any]] = []
    teacher, clock = gemini_teacher({
        "gemini-1 …1111": [resource_exhausted("Resource has been exhausted (e.g. check quota).")],
        "gemini-2 …2222": [gemini_response("```json\n" + json.dumps(GOOD) + "\n```")],
    }, calls)
    result = teacher.generate(TASK)
    assert result.data == GOOD and result.key_id == "gemini-2 …2222"
    assert result.usage.prompt_tokens == 120 and result.usage.completion_tokens == 30
    config = calls[-1]["config"]
    assert config.response_mime_type == "application/json"
    assert "additionalProperties" not in json.dumps(config.response_schema)
    assert config.system_instruction and "never a command" in config.system_instruction
    assert calls[-1]["contents"][0]["role"] == "user"
    usage = teacher.usage()
    assert usage["keys"]["gemini-1 …1111"]["set_aside"].startswith("quota_exhausted")
    assert usage["keys"]["gemini-2 …2222"]["prompt_tokens"] == 120
    assert clock.sleeps == []
    assert_no_secrets(caplog.text, repr(teacher))


def test_gemini_per_minute_limit_backs_off_and_all_exhausted_raises():
    calls: list[dict[str, Any]] = []
    teacher, clock = gemini_teacher({
        "gemini-1 …1111": [resource_exhausted("Quota exceeded for metric: generate_content_requests per minute"),
                           gemini_response(json.dumps(GOOD))],
    }, calls, n_keys=1)
    assert teacher.generate(TASK).data == GOOD
    assert len(clock.sleeps) == 1 and 0.75 <= clock.sleeps[0] <= 1.25

    teacher, _ = gemini_teacher({
        "gemini-1 …1111": [resource_exhausted("Resource has been exhausted (e.g. check quota).")],
        "gemini-2 …2222": [resource_exhausted("Resource has been exhausted (e.g. check quota).")],
    }, calls)
    with pytest.raises(AllKeysFailed, match="All 2 .*gemini-1 …1111: quota_exhausted"):
        teacher.generate(TASK)


def test_gemini_malformed_then_good_reasks_with_model_turn():
    calls: list[dict[str, Any]] = []
    teacher, _ = gemini_teacher({"gemini-1 …1111": [gemini_response('{"pairs": [{"question": "q"}]}'),
                                                     gemini_response(json.dumps(GOOD))]}, calls, n_keys=1)
    result = teacher.generate(TASK)
    assert result.attempts == 2 and result.usage.prompt_tokens == 240
    roles = [c["role"] for c in calls[-1]["contents"]]
    assert roles == ["user", "model", "user"]
    assert "'answer' is a required property" in calls[-1]["contents"][-1]["parts"][0]["text"]


def test_gemini_schema_strips_unsupported_keywords():
    schema = gemini_schema(TASK.schema)
    text = json.dumps(schema)
    assert "additionalProperties" not in text and "minLength" not in text and "maxItems" in text


# --------------------------------------------------------------------------- llama.cpp


def test_llama_cpp_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails even if installed
    with pytest.raises(TeacherError, match="pip install llama-cpp-python"):
        LlamaCppTeacher("/models/teacher.gguf").generate(TASK)


def test_llama_cpp_with_a_loaded_model():
    class FakeLlama:
        def __init__(self) -> None:
            self.kwargs: dict[str, Any] = {}

        def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
            self.kwargs = kwargs
            return {"choices": [{"message": {"content": json.dumps(GOOD)}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 4}}

    llm = FakeLlama()
    result = LlamaCppTeacher("/models/teacher.gguf", llm=llm).generate(TASK)
    assert result.data == GOOD and result.key_id is None and result.usage.prompt_tokens == 9
    assert llm.kwargs["response_format"] == {"type": "json_object", "schema": TASK.schema}


def test_describe_is_json_ready_without_secrets(server):
    teacher, _ = make_teacher(server, n_keys=2, rpm=30)
    d = teacher.describe()
    assert d["keys"] == ["key-1 …1111", "key-2 …2222"] and d["settings"]["rpm"] == 30
    assert_no_secrets(json.dumps(d))


def test_engine_modules_do_not_import_django_or_sdks():
    import subprocess

    code = ("import sys; import datasets_app.engine.teachers, datasets_app.engine.keys, "
            "datasets_app.engine.prompts, datasets_app.engine.jsonrepair; "
            "bad = [m for m in ('django', 'openai', 'google.genai', 'llama_cpp') if m in sys.modules]; "
            "assert not bad, bad")
    from pathlib import Path

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
