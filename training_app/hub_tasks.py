"""Push an export to a model hub: the owner's token (encrypted at rest), a model card written from the
version's lineage and evaluation, one commit with the export's files. The engine
(``training_app.engine.hub``) talks to the hub; this module gathers the files and records the push.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from datasets_app import crypto
from domains import audit
from domains.jobs import JobContext, enqueue_job, job_handler
from training_app.export_tasks import PRIVATE_FILES
from training_app.models import EvaluationRun, HubCredential, HubPush, ModelExport
from training_app.services import export_dir


def save_token(*, domain, hub: str, token: str, by) -> HubCredential:
    token = (token or "").strip()
    if len(token) < 8 or any(c.isspace() for c in token):
        raise ValidationError({"token": _("That does not look like an access token.")})
    credential, _created = HubCredential.objects.update_or_create(
        domain=domain, hub=hub, defaults={"token_encrypted": crypto.encrypt(token), "fingerprint": token[-4:],
                                          "created_by": by if getattr(by, "is_authenticated", False) else None})
    return credential


def start_hub_push(*, domain, export: ModelExport, by, repo_id: str, private: bool = True, token: str = "",
                   hub: str = "huggingface") -> HubPush:
    """Check the export and the repository id, keep a new token (encrypted), queue the push."""
    from training_app.engine.hub import HUBS, check_repo_id

    if export.domain_id != domain.pk:
        raise ValidationError({"export": "That export belongs to another domain."})
    if hub not in HUBS:
        raise ValidationError({"hub": _("Pushing to %(hub)s is not supported.") % {"hub": hub}})
    if not export.job or export.job.status != "succeeded":
        raise ValidationError({"export": _("Only a finished export can be pushed.")})
    try:
        repo_id = check_repo_id(repo_id)
    except ValueError as exc:
        raise ValidationError({"repo_id": str(exc)}) from exc
    with transaction.atomic():
        if token:
            save_token(domain=domain, hub=hub, token=token, by=by)
        elif not HubCredential.objects.filter(domain=domain, hub=hub).exists():
            raise ValidationError({"token": _("Give an access token with write permission (it is kept encrypted "
                                              "for the next push).")})
        push = HubPush.objects.create(domain=domain, export=export, hub=hub, repo_id=repo_id, private=bool(private),
                                      created_by=by if getattr(by, "is_authenticated", False) else None)
        push.job = enqueue_job(domain=domain, kind="hub_push", params={"push_id": push.pk}, created_by=by)
        push.save(update_fields=["job"])
        audit.record(domain=domain, by=by, action="export.push", target=f"{hub}:{repo_id}",
                     summary=f"export #{export.pk} of v{export.model_version.number}", export=export.pk,
                     private=bool(private))
    return push


def card_meta(export: ModelExport, formats: list[str]) -> dict:
    from datasets_app.models import DatasetVersion

    version = export.model_version
    domain = export.domain
    dataset = DatasetVersion.objects.for_domain(domain).filter(content_hash=version.dataset_hash) \
        .select_related("dataset").order_by("-number").first() if version.dataset_hash else None
    evaluation = EvaluationRun.objects.filter(domain=domain, model_version=version, job__status="succeeded") \
        .order_by("-created_at").first()
    parents, parent = [], version.parent
    while parent is not None and len(parents) < 20:
        parents.append(parent.number)
        parent = parent.parent
    language = getattr(domain, "language", "")
    return {
        "domain": domain.slug, "domain_name": domain.name, "version": version.number, "kind": version.kind,
        "base_model": version.base_model, "languages": [language] if language in ("zh", "en") else ["zh", "en"],
        "parents": parents, "config": version.config or {}, "metrics": version.metrics or {},
        "dataset": {"name": dataset.dataset.name, "version": dataset.number, "hash": dataset.content_hash,
                    "pairs": ((dataset.counts or {}).get("qa") or {}).get("train")} if dataset else {},
        "evaluation": {c: r for c, r in (evaluation.results or {}).items() if isinstance(r, dict)} if evaluation else {},
        "formats": formats, "vsm": f"export #{export.pk}",
    }


def _stage(export: ModelExport, folder: Path) -> list[str]:
    """Hard links (copies across file systems) of the export's files, as the hub repository lays them out."""
    out = export_dir(export)
    items: dict[str, Path] = {}
    for sub in ("merged", "onnx"):
        d = out / sub
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file() and p.name not in PRIVATE_FILES and not p.name.startswith(".") and p.name != "README.md":
                    items[p.name if sub == "merged" else f"onnx/{p.name}"] = p
    for name in ("gguf", "quantized", "modelfile"):
        path = export.artifact_file(name)
        if path is not None:
            items[path.name] = path
    if not items:
        raise ValidationError(_("This export has no files left to push; export the version again."))
    for rel, src in items.items():
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return sorted(items)


@job_handler("hub_push", _("Push to a model hub"))
def push_export(ctx: JobContext) -> dict:
    from training_app.engine.hub import HubError, model_card, push_folder

    push = HubPush.objects.select_related("export", "export__model_version", "export__domain").filter(
        pk=ctx.params.get("push_id"), domain=ctx.domain).first()
    if push is None:
        ctx.fail("The push was deleted before it started.")
    credential = HubCredential.objects.filter(domain=ctx.domain, hub=push.hub).first()
    if credential is None:
        ctx.fail("No access token is stored for this hub any more; push again with a token.")
    try:
        token = crypto.decrypt(credential.token_encrypted)
    except crypto.KeyUnreadable:
        ctx.fail("The stored hub token cannot be decrypted (SECRET_KEY changed); push again with the token.")
    folder = export_dir(push.export) / f".hub-{push.pk}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        ctx.progress(0, 2, message=gettext_noop("Writing the model card"))
        try:
            files = _stage(push.export, folder)
        except ValidationError as exc:
            ctx.fail(" ".join(exc.messages))
        card = model_card({**card_meta(push.export, files), "hub": push.hub})
        (folder / "README.md").write_text(card, encoding="utf-8")
        HubPush.objects.filter(pk=push.pk).update(card=card)
        ctx.progress(1, 2, message=gettext_noop("Uploading to the hub"))
        ctx.log(f"pushing {len(files)} file(s) and README.md to {push.hub}:{push.repo_id} "
                f"({'private' if push.private else 'public'}) with the token …{credential.fingerprint}")
        endpoint = settings.VSM_MODELSCOPE_ENDPOINT if push.hub == "modelscope" else settings.VSM_HF_ENDPOINT
        try:
            result = push_folder(folder, push.repo_id, token, hub=push.hub, private=push.private,
                                 endpoint=endpoint or None,
                                 message=f"VSM: {push.export.domain.slug} v{push.export.model_version.number}")
        except HubError as exc:
            ctx.fail(str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    HubPush.objects.filter(pk=push.pk).update(url=result.url, commit=result.commit)
    ctx.progress(2, 2, message=gettext_noop("Done"))
    ctx.log(f"pushed: {result.url}")
    return {"push_id": push.pk, "url": result.url, "commit": result.commit, "files": result.files + 1}
