"""Key pool: ids instead of secrets, fewest-failures choice, back-off, set-aside, rpm, accounting."""
from __future__ import annotations

import pickle
import random
import threading
import time

import pytest

from datasets_app.engine.keys import (
    AllKeysFailed,
    ApiKey,
    Failure,
    FailureKind,
    FatalTeacherError,
    KeyPool,
    KeyPoolConfig,
    RateLimiter,
    RetriesExhausted,
    keys_from_env,
    make_keys,
    redact,
)

SECRETS = ["sk-test-AAAAAAAAAAAAAAAAAAAA1111", "sk-test-BBBBBBBBBBBBBBBBBBBB2222", "sk-test-CCCCCCCCCCCCCCCCCCCC3333"]


class FakeClock:
    """Monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_pool(n: int = 3, **cfg) -> tuple[KeyPool, FakeClock]:
    clock = FakeClock()
    pool = KeyPool(make_keys(SECRETS[:n]), KeyPoolConfig(**cfg), clock=clock, sleep=clock.sleep, rng=random.Random(7))
    return pool, clock


def test_key_ids_and_reprs_never_show_secrets():
    keys = make_keys(SECRETS + ["", SECRETS[0]])
    assert [k.id for k in keys] == ["key-1 …1111", "key-2 …2222", "key-3 …3333"]
    pool = KeyPool(keys)
    for text in (repr(keys), str(keys[0]), repr(pool), str(pool), str(pool.usage())):
        for s in SECRETS:
            assert s not in text
    assert keys[0].reveal() == SECRETS[0]
    with pytest.raises(TypeError):
        pickle.dumps(keys[0])
    assert make_keys(["short"])[0].id == "key-1"  # short secrets show no tail at all


def test_keys_from_env():
    env = {"VSM_TEACHER_KEYS_DEEPSEEK": f" {SECRETS[0]},{SECRETS[1]}\n{SECRETS[2]}, "}
    keys = keys_from_env("deepseek", env)
    assert [k.id for k in keys] == ["deepseek-1 …1111", "deepseek-2 …2222", "deepseek-3 …3333"]
    assert keys_from_env("gemini", env) == []


def test_redact_removes_our_secrets_and_key_shaped_strings():
    keys = make_keys(SECRETS[:1])
    text = f"Incorrect API key provided: {SECRETS[0]} / masked sk-test-AA****1111 / AIzaSyD-abcdefghijklmnop"
    out = redact(text, keys)
    assert SECRETS[0] not in out and "AIzaSy" not in out and "sk-test-AA" not in out
    assert "key-1 …1111" in out


def test_picks_key_with_fewest_recent_failures_and_forgets_old_ones():
    pool, clock = make_pool(3, failure_window_s=100)
    a, b, c = pool.keys
    for key in (a, a, b):
        pool.report_failure(key, Failure(FailureKind.SERVER_ERROR))
    clock.now += 70  # past every cooldown
    assert pool.acquire() == c
    pool.report_success(c)
    clock.now += 50  # a's and b's failures leave the 100 s window
    assert pool.acquire() == a  # failures forgotten; fewest requests breaks the tie


def test_backoff_is_exponential_with_bounded_jitter_and_honours_retry_after():
    pool, _ = make_pool(1, base_delay_s=1.0, max_delay_s=30.0, jitter=0.25)
    for n, base in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 30), (10, 30)]:
        for _ in range(50):
            assert base * 0.75 <= pool.backoff_delay(n) <= base * 1.25
    for _ in range(50):
        assert 7.0 <= pool.backoff_delay(1, retry_after=7.0) <= 7.0 * 1.25
        assert 30.0 <= pool.backoff_delay(1, retry_after=999) <= 30 * 1.25  # capped


def test_run_rotates_and_backs_off_then_succeeds():
    pool, clock = make_pool(2, base_delay_s=1.0, jitter=0.25)
    script = [Failure(FailureKind.RATE_LIMITED, retry_after=3.0), Failure(FailureKind.RATE_LIMITED),
              Failure(FailureKind.TIMEOUT), Failure(FailureKind.SERVER_ERROR)]
    used: list[str] = []

    def fn(key: ApiKey) -> str:
        used.append(key.id)
        if script:
            raise RuntimeError(script.pop(0).kind.value)
        return "ok"

    def classify(exc: BaseException) -> Failure:
        return Failure(FailureKind(str(exc)), retry_after=3.0 if not used[1:] else None)

    assert pool.run(fn, classify) == "ok"
    assert used[:2] == ["key-1 …1111", "key-2 …2222"]  # rotated to the other key at once
    assert len(used) == 5
    assert clock.sleeps, "with both keys cooling down the pool must wait"
    assert all(0 < d <= 8 * 1.25 for d in clock.sleeps)
    usage = pool.usage()
    assert usage["totals"]["requests"] == 5 and usage["totals"]["failures"] == 4
    assert usage["totals"]["successes"] == 1


def test_quota_exhausted_key_is_set_aside_and_others_continue():
    pool, clock = make_pool(3)
    calls: list[str] = []

    def fn(key: ApiKey) -> str:
        calls.append(key.id)
        if key.id.startswith("key-1"):
            raise RuntimeError("quota")
        return key.id

    def classify(exc: BaseException) -> Failure:
        return Failure(FailureKind.QUOTA_EXHAUSTED, f"insufficient_quota for {SECRETS[0]}")

    for _ in range(4):
        assert pool.run(fn, classify) != "key-1 …1111"
    assert calls.count("key-1 …1111") == 1
    usage = pool.usage()
    assert usage["keys"]["key-1 …1111"]["set_aside"].startswith("quota_exhausted")
    assert SECRETS[0] not in str(usage)
    assert usage["totals"]["keys_set_aside"] == 1
    assert clock.sleeps == []


def test_all_keys_failed_names_ids_not_secrets():
    pool, _ = make_pool(3)

    def fn(key: ApiKey) -> str:
        raise RuntimeError(f"bad key {key.reveal()}")

    def classify(exc: BaseException) -> Failure:
        kind = FailureKind.INVALID_KEY if "1111" in str(exc) else FailureKind.QUOTA_EXHAUSTED
        return Failure(kind, str(exc))

    with pytest.raises(AllKeysFailed) as info:
        pool.run(fn, classify)
    msg = str(info.value)
    assert "All 3" in msg and "set aside" in msg
    for i, s in enumerate(SECRETS, 1):
        assert s not in msg and f"key-{i}" in msg
    assert set(info.value.reasons) == set(pool.key_ids)


def test_transient_errors_are_bounded_and_fatal_errors_stop_at_once():
    pool, _ = make_pool(1, max_attempts=3)
    with pytest.raises(RetriesExhausted, match="after 3 attempts"):
        pool.run(lambda k: (_ for _ in ()).throw(RuntimeError()), lambda e: Failure(FailureKind.SERVER_ERROR))
    pool, _ = make_pool(2)
    with pytest.raises(FatalTeacherError, match="unknown model"):
        pool.run(lambda k: (_ for _ in ()).throw(RuntimeError()), lambda e: Failure(FailureKind.FATAL, "unknown model"))
    assert pool.usage()["totals"]["failures"] == 0
    with pytest.raises(ZeroDivisionError):  # unclassified errors propagate untouched
        pool.run(lambda k: 1 / 0, lambda e: None)


def test_token_accounting_per_key():
    pool, _ = make_pool(2)
    key = pool.acquire()
    pool.add_tokens(key, 100, 20)
    pool.report_success(key)
    d = pool.usage()
    assert d["keys"][key.id]["prompt_tokens"] == 100 and d["keys"][key.id]["completion_tokens"] == 20
    assert d["totals"]["prompt_tokens"] == 100 and d["totals"]["requests"] == 1


def test_rate_limiter_spaces_requests_per_minute():
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(60.0)
    assert clock.now == pytest.approx(60.0)
    assert RateLimiter(None).acquire() == 0


def test_concurrency_cap():
    pool = KeyPool(make_keys(SECRETS), KeyPoolConfig(concurrency=2))
    active = 0
    peak = 0
    lock = threading.Lock()

    def fn(key: ApiKey) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    threads = [threading.Thread(target=pool.run, args=(fn, lambda e: None)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


def test_empty_pool_says_so():
    with pytest.raises(AllKeysFailed, match="no keys configured"):
        KeyPool([])
