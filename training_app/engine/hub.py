"""Push an export to a model hub, with a model card written from the version's lineage and evaluation.

``model_card(meta)`` writes the README.md a hub shows (YAML front matter with the base model,
tags and languages, then what the model is for, how it was trained, on which data, how it scored
and how to run it). ``push_folder`` creates the repository when it is missing and uploads a folder
in one commit, to the Hugging Face Hub through ``huggingface_hub`` or to ModelScope through
``modelscope`` (large files as LFS blobs, the rest inline, committed in batches). Both endpoints are
configurable, so a mirror or a self-hosted hub works the same. No Django here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HUBS = ("huggingface", "modelscope")
HUB_LABELS = {"huggingface": "Hugging Face Hub", "modelscope": "ModelScope"}
REPO_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class HubError(RuntimeError):
    """A push that failed; the message says what the hub answered (never the token)."""


@dataclass
class PushResult:
    url: str
    commit: str
    files: int


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(set(p) - REPO_ID_CHARS for p in parts) \
            or any(p.startswith((".", "-")) or ".." in p for p in parts):
        raise ValueError(f"{repo_id!r} is not a repository id: use owner/name (letters, digits, - _ .).")
    return repo_id


def _yaml_list(name: str, values) -> list[str]:
    values = [v for v in values if v]
    return [f"{name}:"] + [f"- {v}" for v in values] if values else []


def model_card(meta: dict[str, Any]) -> str:
    """README.md for the hub from ``meta``: domain, version, kind, base_model, languages, dataset
    (name, version, hash, pairs), config, metrics (training), evaluation ({configuration: {metric:
    value}}), formats (file names), vsm (where it was made)."""
    front = ["---", "library_name: " + ("sentence-transformers" if meta.get("kind") == "embedding" else "transformers")]
    if meta.get("base_model") and not str(meta["base_model"]).startswith(("embedded:", "/", ".")):
        front.append(f"base_model: {meta['base_model']}")
    front += _yaml_list("language", meta.get("languages") or [])
    front += _yaml_list("tags", ["vsm", "vertical-small-model", meta.get("kind") or "", *(meta.get("tags") or [])])
    if meta.get("hub") == "modelscope":  # ModelScope files a model page under its frameworks and tasks
        front += _yaml_list("frameworks", ["pytorch"])
        front += _yaml_list("tasks", ["sentence-embedding" if meta.get("kind") == "embedding" else "text-generation"])
    front.append("---")
    title = f"{meta.get('domain', 'domain')} v{meta.get('version', '?')}"
    lines = [*front, "", f"# {title}", "",
             f"A vertical small model of the **{meta.get('domain_name') or meta.get('domain')}** domain, built "
             "with VSM from the domain's own documents: a reviewed question–answer dataset distilled by a teacher "
             "model, then fine-tuned and evaluated on held-out questions.", ""]
    lines += ["## Lineage", "", "| | |", "|---|---|",
              f"| kind | {meta.get('kind', '')} |", f"| base model | `{meta.get('base_model', '')}` |"]
    for parent in meta.get("parents") or []:
        lines.append(f"| trained on top of | v{parent} |")
    data = meta.get("dataset") or {}
    if data:
        lines.append(f"| dataset | {data.get('name', '')} v{data.get('version', '')} "
                     f"(`{str(data.get('hash', ''))[:12]}`, {data.get('pairs', '?')} training pairs) |")
    lines.append("")
    config = meta.get("config") or {}
    if config:
        keys = [k for k in ("method", "lora_r", "lora_alpha", "learning_rate", "epochs", "max_length", "objective")
                if k in config]
        lines += ["## Training", "", "| setting | value |", "|---|---|",
                  *[f"| {k} | {config[k]} |" for k in keys]]
        metrics = meta.get("metrics") or {}
        for k in ("final_train_loss", "best_val_loss", "steps", "elapsed_s", "device"):
            if metrics.get(k) is not None:
                lines.append(f"| {k} | {metrics[k]} |")
        lines.append("")
    evaluation = meta.get("evaluation") or {}
    if evaluation:
        names = ("accuracy", "key_fact_recall", "rouge_l", "hallucination_rate", "refusal_rate", "hit@1", "mrr@10")
        shown = [n for n in names if any(n in row for row in evaluation.values())]
        lines += ["## Evaluation (held-out questions)", "",
                  "| configuration | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for conf, row in evaluation.items():
            cells = [f"{row[n]:.3f}" if isinstance(row.get(n), (int, float)) else "—" for n in shown]
            lines.append(f"| {conf} | " + " | ".join(cells) + " |")
        lines.append("")
    formats = meta.get("formats") or []
    if formats:
        lines += ["## Files", "", *[f"- `{f}`" for f in formats], ""]
        ggufs = [f for f in formats if f.endswith(".gguf")]
        if ggufs:
            lines += ["Run it with llama.cpp: `llama-cli -m " + ggufs[-1] + " -p \"…\"`, or with Ollama from the "
                      "Modelfile: `ollama create " + str(meta.get("domain", "model")) + " -f Modelfile`.", ""]
    lines += ["Answers should be checked against the domain's documents: this model was trained for one domain "
              "and is not a general assistant.", ""]
    if meta.get("vsm"):
        lines += [f"_Made with VSM ({meta['vsm']})._", ""]
    return "\n".join(lines)


def _refused(repo_id: str, token: str, exc: Exception) -> HubError:
    text = str(exc).replace(token, "***") if token else str(exc)
    status = getattr(exc, "status_code", None)
    status = f" (HTTP {status})" if status and str(status) not in text else ""
    return HubError(f"The hub refused the push to {repo_id}: {type(exc).__name__}{status}: {text[:500]}")


def push_folder(folder: str | os.PathLike, repo_id: str, token: str, *, hub: str = "huggingface",
                private: bool = True, endpoint: str | None = None, message: str = "Upload from VSM") -> PushResult:
    """Create ``repo_id`` if needed and upload every file of ``folder``."""
    if hub not in HUBS:
        raise HubError(f"Pushing to {hub!r} is not supported; use one of: {', '.join(HUBS)}.")
    repo_id = check_repo_id(repo_id)
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not files:
        raise HubError(f"Nothing to push: {folder} is empty.")
    push = _push_modelscope if hub == "modelscope" else _push_huggingface
    try:
        url, commit = push(folder, repo_id, token, private=private, endpoint=endpoint, message=message)
    except HubError:
        raise
    except Exception as exc:  # 401/403 (a bad token), 404, network
        raise _refused(repo_id, token, exc) from exc
    return PushResult(url=url, commit=commit, files=len(files))


def _push_huggingface(folder: Path, repo_id: str, token: str, *, private, endpoint, message):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint or None, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message, repo_type="model")
    return str(getattr(info, "commit_url", "") or info), str(getattr(info, "oid", "") or "")


def _push_modelscope(folder: Path, repo_id: str, token: str, *, private, endpoint, message):
    from modelscope.hub.api import HubApi

    api = HubApi(endpoint=endpoint or None, token=token)
    # created first, with the chosen visibility: the upload would otherwise create it public
    api.create_repo(repo_id, visibility="private" if private else "public", exist_ok=True, repo_type="model")

    result = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message,
                               repo_type="model", use_cache=False, disable_tqdm=True)
    # a refused commit raises; the answer is one dict per committed batch (none when nothing changed)
    commits = [e for e in (result if isinstance(result, list) else [result]) if isinstance(e, dict)]
    commit = next((str(e.get(k)) for e in reversed(commits) for k in ("CommitId", "commit_id", "Sha", "sha", "id")
                   if e.get(k)), "")
    return f"{str(api.endpoint).rstrip('/')}/models/{repo_id}", commit
