"""Model hubs as sources of base and embedding models: Hugging Face and ModelScope.

A model spec names its hub with a prefix, ``hf:org/name`` or ``modelscope:org/name`` (also
``ms:``); a bare ``org/name`` goes to the default hub, ``VSM_MODEL_HUB`` (``huggingface`` unless
set to ``modelscope``, which is what teams in mainland China use). ``fetch`` looks in the hub's
local cache first and downloads only when the hub is allowed and reachable; every failure is a
:class:`SourceError` that names the hub that was tried, its endpoint, and how to point VSM at a
local copy instead. It fails fast: without a network it never waits on a download.

No Django here; huggingface_hub and modelscope are imported inside the functions.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

HUGGINGFACE, MODELSCOPE = "huggingface", "modelscope"
HUBS = (HUGGINGFACE, MODELSCOPE)
PREFIXES = {"hf:": HUGGINGFACE, "huggingface:": HUGGINGFACE, "modelscope:": MODELSCOPE, "ms:": MODELSCOPE}
LABEL = {HUGGINGFACE: "Hugging Face", MODELSCOPE: "ModelScope"}
TRUE = {"1", "true", "yes", "on"}


class SourceError(ValueError):
    """A hub model that cannot be had; the message says which hub was tried and what to do."""


def default_hub() -> str:
    hub = os.environ.get("VSM_MODEL_HUB", "").strip().lower() or HUGGINGFACE
    return hub if hub in HUBS else HUGGINGFACE


def split_spec(spec: str) -> tuple[str | None, str]:
    """``(hub, id)`` for a prefixed spec, ``(None, spec)`` otherwise."""
    lowered = spec.lower()
    for prefix, hub in PREFIXES.items():
        if lowered.startswith(prefix):
            return hub, spec[len(prefix):].strip()
    return None, spec


def qualify(spec: str, hub: str) -> str:
    """``spec`` with ``hub``'s prefix when it is a bare ``org/name`` id (not a path, not embedded,
    not already prefixed): how a domain's chosen hub is recorded on a run."""
    import re

    spec = (spec or "").strip()
    if hub not in HUBS or split_spec(spec)[0] is not None or spec.startswith("embedded:"):
        return spec
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", spec) or Path(spec).expanduser().exists():
        return spec
    return f"{'modelscope' if hub == MODELSCOPE else 'hf'}:{spec}"


def endpoint(hub: str) -> str:
    if hub == MODELSCOPE:
        url = os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
        if url:
            return url.rstrip("/")
        return "https://" + (os.environ.get("MODELSCOPE_DOMAIN", "").strip() or "www.modelscope.cn")
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def offline(hub: str) -> str | None:
    """The environment variable that forbids downloads from ``hub``, or None."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if hub == HUGGINGFACE else ("MODELSCOPE_OFFLINE",)
    for name in ("VSM_OFFLINE", *names):
        if os.environ.get(name, "").strip().lower() in TRUE:
            return name
    return None


def reachable(hub: str, timeout: float = 3.0) -> bool:
    url = urlparse(endpoint(hub))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def how_to_use_a_local_copy(hub: str, repo_id: str, fallback: str = "") -> str:
    if hub == MODELSCOPE:
        get = f"`modelscope download --model {repo_id} --local_dir <folder>`"
    else:
        get = f"`huggingface-cli download {repo_id} --local-dir <folder>`"
    text = (f"To use a local copy, download it on a machine with internet ({get}), copy the folder here "
            "and give its path instead of the id")
    return text + (f", or use {fallback}." if fallback else ".")


def _snapshot(hub: str, repo_id: str, *, local_only: bool, patterns: Sequence[str] | None) -> Path:
    if hub == MODELSCOPE:
        try:
            from modelscope.hub.snapshot_download import snapshot_download as ms_snapshot
        except ImportError as exc:  # an installation without the optional package
            raise SourceError(f"ModelScope model {repo_id!r}: the `modelscope` package is not installed "
                              "(`pip install modelscope`).") from exc
        # The cache folder is read from MODELSCOPE_CACHE on every call (modelscope reads it once,
        # at import), so a setting changed since, as in a worker's environment, is honoured.
        return Path(ms_snapshot(repo_id, local_files_only=local_only, cache_dir=os.environ.get("MODELSCOPE_CACHE") or None,
                                allow_patterns=list(patterns) if patterns else None))
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, local_files_only=local_only,
                                  allow_patterns=list(patterns) if patterns else None))


def cached(hub: str, repo_id: str, patterns: Sequence[str] | None = None) -> Path | None:
    """The hub's local copy of ``repo_id``, or None when it has none."""
    try:
        return _snapshot(hub, repo_id, local_only=True, patterns=patterns)
    except SourceError:
        raise
    except Exception:  # not cached (LocalEntryNotFoundError, CacheNotFound and friends)
        return None


def check_download_allowed(hub: str, repo_id: str, *, what: str = "model", fallback: str = "") -> None:
    """Raise SourceError when ``repo_id`` would have to be downloaded and cannot be."""
    label, how_to = LABEL[hub], how_to_use_a_local_copy(hub, repo_id, fallback)
    flag = offline(hub)
    if flag:
        raise SourceError(f"{label} {what} {repo_id!r} is not in the local {label} cache and {flag} is set, "
                          f"so VSM did not try to download it. {how_to}")
    if not reachable(hub):
        raise SourceError(f"{label} {what} {repo_id!r} is not in the local {label} cache and {endpoint(hub)} "
                          f"cannot be reached from this machine. {how_to}")


def fetch(hub: str, repo_id: str, *, patterns: Sequence[str] | None = None, what: str = "model",
          fallback: str = "") -> Path:
    """A local folder of ``repo_id`` from ``hub``: its cache, else a download when allowed and reachable."""
    if hub not in HUBS:
        raise SourceError(f"Unknown model hub {hub!r}; use one of: {', '.join(HUBS)}.")
    local = cached(hub, repo_id, patterns)
    if local is not None:
        return local
    check_download_allowed(hub, repo_id, what=what, fallback=fallback)
    try:
        return _snapshot(hub, repo_id, local_only=False, patterns=patterns)
    except SourceError:
        raise
    except Exception as exc:  # 404, gated repo, auth, network drop
        login = "`modelscope login`" if hub == MODELSCOPE else "`huggingface-cli login` or HF_TOKEN"
        raise SourceError(f"Could not download {LABEL[hub]} {what} {repo_id!r} from {endpoint(hub)}: "
                          f"{type(exc).__name__}: {exc}. Check the id's spelling; private or gated models "
                          f"need {login}. {how_to_use_a_local_copy(hub, repo_id, fallback)}") from exc
