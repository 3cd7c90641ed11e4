"""API-key pool for teacher LLMs: rotation, back-off, quota set-aside and accounting.

Why: a distillation job makes thousands of calls through keys that hit rate limits, run out
of quota or get revoked half-way. The pool keeps going on the healthy keys, waits politely
on the busy ones and, when nothing is left, says so in words a person can act on. Secrets
never leave the ``ApiKey`` object except through ``reveal()``: ids (``key-1 …a1b2``) are
what logs, errors and accounting see.
"""
from __future__ import annotations

import enum
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENV_PREFIX = "VSM_TEACHER_KEYS_"


# --------------------------------------------------------------------------- keys


class ApiKey:
    """One secret with a printable id; ``repr``/``str`` show only the id."""

    __slots__ = ("_secret", "id")

    def __init__(self, key_id: str, secret: str) -> None:
        if not secret:
            raise ValueError(f"{key_id}: empty API key")
        self.id = key_id
        self._secret = secret

    def reveal(self) -> str:
        """The secret itself, for the HTTP client only."""
        return self._secret

    def __repr__(self) -> str:
        return f"ApiKey({self.id!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other.id == self.id and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> Any:  # pickling would copy the secret into job payloads
        raise TypeError("ApiKey cannot be pickled; pass key ids and re-read secrets")


def key_id_for(secret: str, index: int, prefix: str = "key") -> str:
    """``key-<n> …last4``; the suffix is omitted for short secrets so little of them shows."""
    tail = f" …{secret[-4:]}" if len(secret) >= 16 else ""
    return f"{prefix}-{index}{tail}"


def make_keys(secrets: Iterable[str], prefix: str = "key") -> list[ApiKey]:
    """Wrap plain secrets (e.g. decrypted TeacherConfig keys); blanks and duplicates dropped."""
    out: list[ApiKey] = []
    seen: set[str] = set()
    for raw in secrets:
        secret = (raw or "").strip()
        if not secret or secret in seen:
            continue
        seen.add(secret)
        out.append(ApiKey(key_id_for(secret, len(out) + 1, prefix), secret))
    return out


def keys_from_env(name: str, environ: Mapping[str, str] | None = None) -> list[ApiKey]:
    """Keys from ``VSM_TEACHER_KEYS_<NAME>`` (comma or newline separated)."""
    env = os.environ if environ is None else environ
    var = ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())
    raw = env.get(var, "")
    return make_keys(re.split(r"[,\n]", raw), prefix=name.lower())


_SECRET_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-\*\.]{6,}|AIza[0-9A-Za-z_\-]{10,})")


def redact(text: str, keys: Iterable[ApiKey] = ()) -> str:
    """Remove secrets (ours, and anything shaped like an OpenAI/Google key) from text."""
    for key in keys:
        secret = key.reveal()
        text = text.replace(secret, f"<{key.id}>")
        if len(secret) >= 12:  # providers echo masked prefixes like "sk-abc1***"
            text = text.replace(secret[:8], "<redacted>")
    return _SECRET_LIKE.sub("<redacted>", text)


# --------------------------------------------------------------------------- failures


class FailureKind(str, enum.Enum):
    """Why a call failed; decides between back-off, set-aside and giving up."""

    RATE_LIMITED = "rate_limited"  # 429: wait, then retry (maybe another key)
    SERVER_ERROR = "server_error"  # 5xx: wait, then retry
    TIMEOUT = "timeout"  # client timeout: wait, then retry
    CONNECTION = "connection"  # refused/reset: wait, then retry
    QUOTA_EXHAUSTED = "quota_exhausted"  # 429 insufficient_quota / RESOURCE_EXHAUSTED: set aside
    INVALID_KEY = "invalid_key"  # 401/403: set aside
    FATAL = "fatal"  # bad request, unknown model: no key will help

    @property
    def transient(self) -> bool:
        return self in _TRANSIENT

    @property
    def sets_aside(self) -> bool:
        return self in (FailureKind.QUOTA_EXHAUSTED, FailureKind.INVALID_KEY)


_TRANSIENT = {FailureKind.RATE_LIMITED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT, FailureKind.CONNECTION}


@dataclass(frozen=True)
class Failure:
    """A classified provider error (built by each teacher's ``classify``)."""

    kind: FailureKind
    message: str = ""  # already redacted, shown to people
    retry_after: float | None = None  # seconds the provider asked us to wait


class KeyPoolError(RuntimeError):
    """Base for errors the pool raises; messages carry key ids, never secrets."""


class AllKeysFailed(KeyPoolError):
    """Every key is set aside (quota exhausted or invalid)."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        detail = "; ".join(f"{kid}: {why}" for kid, why in self.reasons.items()) or "no keys configured"
        super().__init__(
            f"All {len(self.reasons)} teacher API key(s) are set aside ({detail}). "
            "Add a key with remaining quota or wait for the quota to reset, then resume the job."
        )


class RetriesExhausted(KeyPoolError):
    """Transient errors (429/5xx/timeouts) went on for longer than ``max_attempts``."""


class FatalTeacherError(KeyPoolError):
    """An error no key or retry fixes (bad request, unknown model)."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class KeyPoolConfig:
    """Rotation and back-off settings; stored with the job so runs are reproducible."""

    failure_window_s: float = 300.0  # failures older than this no longer count against a key
    base_delay_s: float = 1.0  # first back-off after a transient failure
    max_delay_s: float = 60.0  # back-off (and honoured Retry-After) is capped here
    jitter: float = 0.25  # each delay is multiplied by a random factor in [1-j, 1+j]
    max_attempts: int = 8  # transient failures tolerated per request before RetriesExhausted
    rpm: int | None = None  # requests per minute for the whole teacher (None = unlimited)
    concurrency: int = 4  # simultaneous in-flight requests


# --------------------------------------------------------------------------- rpm limiter


class RateLimiter:
    """Sliding-window requests-per-minute limiter with injectable clock/sleep."""

    def __init__(self, rpm: int | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, window_s: float = 60.0) -> None:
        self.rpm = rpm
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may start; returns the seconds waited."""
        if not self.rpm:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.window_s:
                    self._stamps.popleft()
                if len(self._stamps) < self.rpm:
                    self._stamps.append(now)
                    return waited
                delay = self.window_s - (now - self._stamps[0])
            self._sleep(max(delay, 0.001))
            waited += delay


# --------------------------------------------------------------------------- pool


@dataclass
class KeyStats:
    """Per-key accounting exported with the job."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    set_aside: str | None = None  # reason, when the key is out of rotation

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "failures_by_kind": dict(self.failures_by_kind),
            "set_aside": self.set_aside,
        }


@dataclass
class _KeyState:
    key: ApiKey
    stats: KeyStats = field(default_factory=KeyStats)
    recent_failures: deque[float] = field(default_factory=deque)
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    in_flight: int = 0


class KeyPool:
    """Chooses a key per request and runs calls with rotation and back-off.

    ``run(fn, classify)`` is the whole protocol: ``fn(key)`` makes one request, ``classify``
    maps its exception to a ``Failure`` (or ``None`` to re-raise it untouched).
    """

    def __init__(self, keys: Sequence[ApiKey], config: KeyPoolConfig = KeyPoolConfig(), *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        if not keys:
            raise AllKeysFailed({})
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate key ids: {ids}")
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._states = [_KeyState(k) for k in keys]
        self._lock = threading.Lock()
        self._limiter = RateLimiter(config.rpm, clock=clock, sleep=sleep)
        self._slots = threading.BoundedSemaphore(max(1, config.concurrency))
        self.delays: deque[float] = deque(maxlen=1000)  # recent back-offs slept, for logs and tests

    def __repr__(self) -> str:
        return f"KeyPool({[s.key.id for s in self._states]})"

    @property
    def key_ids(self) -> list[str]:
        return [s.key.id for s in self._states]

    @property
    def keys(self) -> list[ApiKey]:
        return [s.key for s in self._states]

    def redact(self, text: str) -> str:
        return redact(text, self.keys)

    # -- choosing -------------------------------------------------------------

    def _recent(self, st: _KeyState, now: float) -> int:
        window = self.config.failure_window_s
        while st.recent_failures and now - st.recent_failures[0] > window:
            st.recent_failures.popleft()
        return len(st.recent_failures)

    def acquire(self) -> ApiKey:
        """The usable key with the fewest recent failures, sleeping out a shared cooldown."""
        while True:
            with self._lock:
                live = [s for s in self._states if s.stats.set_aside is None]
                if not live:
                    raise AllKeysFailed({s.key.id: s.stats.set_aside or "" for s in self._states})
                now = self._clock()
                ready = [s for s in live if s.cooldown_until <= now]
                if ready:
                    best = min(ready, key=lambda s: (self._recent(s, now), s.in_flight, s.stats.requests))
                    best.in_flight += 1
                    best.stats.requests += 1
                    return best.key
                wait = min(s.cooldown_until for s in live) - now
            self._sleep(wait)

    def _state(self, key: ApiKey) -> _KeyState:
        for s in self._states:
            if s.key.id == key.id:
                return s
        raise KeyError(key.id)

    # -- reporting ------------------------------------------------------------

    def report_success(self, key: ApiKey, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            st = self._state(key)
            st.in_flight = max(0, st.in_flight - 1)
            st.consecutive_failures = 0
            st.stats.successes += 1
            st.stats.prompt_tokens += int(prompt_tokens or 0)
            st.stats.completion_tokens += int(completion_tokens or 0)

    def add_tokens(self, key: ApiKey, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Tokens spent on a call whose output was later rejected still count."""
        with self._lock:
            st = self._state(key)
            st.stats.prompt_tokens += int(prompt_tokens or 0)
            st.stats.completion_tokens += int(completion_tokens or 0)

    def backoff_delay(self, consecutive: int, retry_after: float | None = None) -> float:
        """Exponential back-off with jitter; a provider's Retry-After wins when given."""
        cfg = self.config
        if retry_after is not None and retry_after > 0:
            base = min(retry_after, cfg.max_delay_s)
            return base * (1.0 + self._rng.uniform(0.0, cfg.jitter))  # never earlier than asked
        base = min(cfg.max_delay_s, cfg.base_delay_s * (2 ** max(0, consecutive - 1)))
        return base * self._rng.uniform(1.0 - cfg.jitter, 1.0 + cfg.jitter)

    def report_failure(self, key: ApiKey, failure: Failure) -> None:
        with self._lock:
            st = self._state(key)
            now = self._clock()
            st.in_flight = max(0, st.in_flight - 1)
            st.stats.failures += 1
            kind = failure.kind.value
            st.stats.failures_by_kind[kind] = st.stats.failures_by_kind.get(kind, 0) + 1
            st.recent_failures.append(now)
            if failure.kind.sets_aside:
                st.stats.set_aside = f"{kind}: {failure.message}"[:300] if failure.message else kind
                logger.warning("teacher key %s set aside (%s)", key.id, st.stats.set_aside)
            elif failure.kind.transient:
                st.consecutive_failures += 1
                delay = self.backoff_delay(st.consecutive_failures, failure.retry_after)
                st.cooldown_until = now + delay
                logger.info("teacher key %s %s; cooling down %.2fs", key.id, kind, delay)

    # -- running --------------------------------------------------------------

    def run(self, fn: Callable[[ApiKey], T], classify: Callable[[BaseException], Failure | None]) -> T:
        """Call ``fn(key)`` until it succeeds, rotating and backing off between failures."""
        transient = 0
        while True:
            self._limiter.acquire()
            before = self._clock()
            key = self.acquire()
            slept = self._clock() - before
            if slept > 0:
                self.delays.append(slept)
            with self._slots:
                try:
                    result = fn(key)
                except Exception as exc:
                    failure = classify(exc)
                    if failure is None:
                        self._release(key)
                        raise
                    failure = Failure(failure.kind, self.redact(failure.message), failure.retry_after)
                    if failure.kind is FailureKind.FATAL:
                        self._release(key)
                        raise FatalTeacherError(failure.message) from None
                    self.report_failure(key, failure)
                    if failure.kind.transient:
                        transient += 1
                        if transient >= self.config.max_attempts:
                            raise RetriesExhausted(
                                f"Teacher still failing after {transient} attempts "
                                f"(last: {failure.kind.value} on {key.id}: {failure.message}). "
                                "The provider may be overloaded; resume the job later or lower rpm/concurrency."
                            ) from None
                    continue
                except BaseException:
                    self._release(key)
                    raise
            self.report_success(key)
            return result

    def _release(self, key: ApiKey) -> None:
        with self._lock:
            st = self._state(key)
            st.in_flight = max(0, st.in_flight - 1)

    # -- accounting -----------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """Per-key and total accounting, JSON-ready, keyed by key id."""
        with self._lock:
            per = {s.key.id: s.stats.as_dict() for s in self._states}
        totals = {f: sum(v[f] for v in per.values())
                  for f in ("requests", "successes", "failures", "prompt_tokens", "completion_tokens")}
        totals["keys_set_aside"] = sum(1 for v in per.values() if v["set_aside"])
        return {"keys": per, "totals": totals}
