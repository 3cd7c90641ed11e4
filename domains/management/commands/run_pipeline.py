"""Run the whole pipeline for a domain from the terminal, with a progress bar per stage and the
evaluation table at the end.

    manage.py run_pipeline demo --sample finance          # the demo: sample documents, demo approvals
    manage.py run_pipeline finance                        # any domain, with its experts' approvals
    manage.py run_pipeline finance --stages sft,evaluate,promote
    manage.py run_pipeline finance --resume               # continue a pipeline that stopped

By default the pipeline runs in this process (no worker needed); ``--queue`` hands it to the
workers and follows its progress.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from domains import pipeline
from domains.jobs import cancel_job, run_job
from domains.models import Domain, Job, Membership, Role


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise CommandError(f"--option takes key=value, not {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


class Command(BaseCommand):
    help = "Run the pipeline (documents → QA data → training → evaluation → promotion → export → chat) for a domain."

    def add_arguments(self, parser):
        parser.add_argument("domain", help="the domain's slug (created from the sample with --sample)")
        parser.add_argument("--sample", choices=sorted(pipeline.SAMPLES),
                            help="start from a sample that ships with VSM (its documents and held-out questions); "
                                 "implies --demo")
        parser.add_argument("--stages", default="", help=f"comma-separated, of: {', '.join(pipeline.STAGE_NAMES)}")
        parser.add_argument("--demo", action="store_true",
                            help="approve the teacher's QA pairs automatically (marked as demo mode everywhere)")
        parser.add_argument("--resume", action="store_true", help="continue the domain's last pipeline where it stopped")
        parser.add_argument("--owner", default="", help="user who owns a new domain and runs the jobs "
                                                        "(default: the domain's first owner, else the first admin)")
        parser.add_argument("--base-model", default="", help="base LLM (default embedded:gemma3-270m)")
        parser.add_argument("--embedding-model", default="", help="base embedding model (default the embedded MiniLM)")
        parser.add_argument("--epochs", type=float, default=None, help="epochs of the LoRA SFT")
        parser.add_argument("--option", action="append", default=[], type=_option, metavar="KEY=VALUE",
                            help="a pipeline option (JSON values), e.g. sft='{\"max_steps\": 20}'")
        parser.add_argument("--scan-pages", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--chunk-chars", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--queue", action="store_true", help="hand the pipeline to the workers and follow it")
        parser.add_argument("--no-progress", action="store_true", help="one line per stage instead of progress bars")

    def handle(self, *args, **o):
        owner = self._owner(o["owner"], o["domain"])
        options: dict = dict(o["option"])
        if o["sample"]:
            try:
                domain, created = pipeline.sample_domain(sample=o["sample"], slug=o["domain"], owner=owner,
                                                         scan_pages=o["scan_pages"], chunk_chars=o["chunk_chars"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            self.stdout.write(f"Domain {domain.slug} ({'created' if created else 'exists'}) with the "
                              f"{o['sample']} sample documents")
            options.setdefault("sample", o["sample"])
            options.setdefault("per_chunk", pipeline.SAMPLES[o["sample"]].per_chunk)
            options.setdefault("demo", True)
        else:
            domain = Domain.objects.filter(slug=o["domain"]).first()
            if domain is None:
                raise CommandError(f"There is no domain {o['domain']!r}. Create it in the browser, or start from a "
                                   f"sample: manage.py run_pipeline {o['domain']} --sample finance")
        if o["demo"]:
            options["demo"] = True
        if o["base_model"]:
            options["base_model"] = o["base_model"]
        if o["embedding_model"]:
            options["embedding_model"] = o["embedding_model"]
        if o["epochs"] is not None:
            options["sft"] = {**options.get("sft", {}), "epochs": o["epochs"]}
        try:
            if o["resume"]:
                job = pipeline.resume_pipeline(domain=domain, by=owner)
            else:
                job = pipeline.start_pipeline(domain=domain, by=owner, stages=o["stages"] or None, options=options)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Pipeline job #{job.pk}: {', '.join(job.params['stages'])}")
        started = time.monotonic()
        runner = None
        self._inline = not o["queue"]
        runner = self._start_runner(job.pk) if self._inline else None
        try:
            job = self._follow(job, runner, bars=not o["no_progress"])
        except KeyboardInterrupt:
            cancel_job(Job.objects.get(pk=job.pk))
            self.stderr.write("Cancelling… (resume later with --resume; finished stages are kept)")
            if runner is not None:
                runner.join(timeout=120)
            raise CommandError("Cancelled.") from None
        self._report(job, domain, time.monotonic() - started)
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"The pipeline {job.status}: {job.error}")

    # -- who runs it

    def _owner(self, username: str, slug: str):
        users = get_user_model()
        if username:
            user = users.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"There is no user {username!r} (manage.py bootstrap creates an admin).")
            return user
        membership = Membership.objects.filter(domain__slug=slug, role=Role.OWNER).select_related("user") \
            .order_by("pk").first()
        if membership is not None:
            return membership.user
        user = users.objects.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("There is no admin user to own the domain: run manage.py bootstrap first, or "
                               "pass --owner.")
        return user

    # -- running and following

    def _start_runner(self, job_id: int) -> threading.Thread:
        runner = threading.Thread(target=self._run, args=(job_id,), name="pipeline", daemon=True)
        runner.start()
        return runner

    @staticmethod
    def _run(job_id: int) -> None:
        try:
            run_job(job_id)
        finally:
            connection.close()

    def _unstick(self, job: Job, runner: threading.Thread | None, waited: float) -> threading.Thread | None:
        """The job is not finished but nothing here runs it: a resumed job whose worker died (the reaper
        puts it back once its lease runs out), one requeued after a database error, or no worker for --queue."""
        from domains.jobs import reap_stale_jobs

        reap_stale_jobs()
        job.refresh_from_db()
        if self._inline and job.status == Job.Status.QUEUED:
            return self._start_runner(job.pk)
        if not self._inline and job.status == Job.Status.QUEUED and int(waited) % 60 == 30:
            self.stderr.write("No worker has taken the pipeline yet: is one running? (manage.py qcluster)")
        return runner

    def _follow(self, job: Job, runner: threading.Thread | None, *, bars: bool) -> Job:
        from tqdm import tqdm

        stages = job.params["stages"]
        bar, shown, done_lines = None, None, set()
        interactive = bars and sys.stderr.isatty()
        started, last_check = time.monotonic(), 0.0
        while True:
            job.refresh_from_db()
            records = (job.result or {}).get("stages") or {}
            for name in stages:  # a line per finished stage, once
                record = records.get(name) or {}
                if name not in done_lines and record.get("status") in Job.FINISHED:
                    if bar is not None and shown == name:
                        bar.close()
                        bar, shown = None, None
                    done_lines.add(name)
                    self.stdout.write(self._stage_line(stages, name, record))
            current = (job.result or {}).get("current")
            child_id = (job.result or {}).get("child_job")
            if interactive and current and child_id and current not in done_lines:
                child = Job.objects.filter(pk=child_id).first()
                if child is not None:
                    if shown != current:
                        if bar is not None:
                            bar.close()
                        label = f"[{stages.index(current) + 1}/{len(stages)}] {pipeline.stage_label(current)}"
                        bar = tqdm(total=None, desc=label, leave=False, dynamic_ncols=True, file=sys.stderr)
                        shown = current
                    if child.progress_total and bar.total != child.progress_total:
                        bar.total = child.progress_total
                    bar.n = child.progress_done
                    bar.set_postfix_str((child.message or "")[:60], refresh=False)
                    bar.refresh()
            if job.is_finished and (runner is None or not runner.is_alive()):
                if bar is not None:
                    bar.close()
                return job
            idle = runner is None or not runner.is_alive()
            if not job.is_finished and idle and time.monotonic() - last_check > 10:
                last_check = time.monotonic()
                runner = self._unstick(job, runner, last_check - started)
            time.sleep(0.5 if interactive else 1.0)

    def _stage_line(self, stages: list[str], name: str, record: dict) -> str:
        mark = {"succeeded": "✓", "failed": "✗", "cancelled": "–"}.get(record.get("status"), "?")
        seconds = record.get("seconds")
        took = f" ({seconds:.0f}s)" if isinstance(seconds, (int, float)) else ""
        detail = self._detail(name, record)
        line = f"{mark} [{stages.index(name) + 1}/{len(stages)}] {pipeline.stage_label(name)}{took}"
        return line + (f": {detail}" if detail else "")

    @staticmethod
    def _detail(name: str, r: dict) -> str:
        if r.get("status") != "succeeded":
            return (r.get("error") or "")[:300]
        if name == "ingest":
            return f"{r.get('documents')} document(s), {r.get('ocr_pages')} page(s) read by OCR, {r.get('chunks')} chunks"
        if name == "heldout":
            return f"{r.get('heldout')} held-out question(s)"
        if name in ("distill", "retrieval_data"):
            return f"{r.get('new_rows')} new row(s)"
        if name == "approve":
            return f"{r.get('approved')} approved" + (" (demo mode: not reviewed by an expert)" if r.get("demo") else "")
        if name == "freeze":
            counts = (r.get("counts") or {}).get("qa") or {}
            return f"dataset version {r.get('number')}: {counts.get('train')} train / {counts.get('validation')} " \
                   f"validation / {counts.get('test')} test"
        if name in ("embedding", "sft"):
            loss = r.get("final_train_loss")
            text = f"model v{r.get('number')}, {r.get('steps')} steps" + (f", final loss {loss:.3f}" if loss else "")
            retrieval = r.get("retrieval") or {}
            if retrieval:
                text += "; MRR@10 " + ", ".join(f"{k} {v.get('mrr@10') or 0:.2f}" for k, v in retrieval.items())
            return text
        if name == "serve":
            return f"{r.get('url')} ({r.get('mode')})"
        if name == "promote_embedding":
            return f"v{r.get('number')} " + ("promoted" if r.get("promoted") else "kept out: " + " ".join(r.get("reasons") or []))
        if name == "promote":
            verdict = f"v{r.get('number')} promoted" if r.get("promoted") else "no model promoted"
            return f"best: {r.get('best')}; {verdict}; chat mode {r.get('mode')}"
        return ""

    def _report(self, job: Job, domain: Domain, seconds: float) -> None:
        outcome = pipeline.outcome_of(job)
        evaluation = outcome.get("evaluation")
        if evaluation:
            self.stdout.write(f"\nEvaluation #{evaluation['id']} on the held-out questions (* = served):")
            self.stdout.write(pipeline.format_table(evaluation["rows"], evaluation["best"]))
        chat = outcome.get("chat")
        if chat:
            self.stdout.write(f"\nChat: {chat['url']}  (log in, then ask a question from the documents)")
            if chat.get("question"):
                self.stdout.write(f"  Q: {chat['question']}\n  A: {chat['answer'][:300]}")
                for citation in chat.get("citations", [])[:1]:
                    page = f", page {citation['page']}" if citation.get("page") else ""
                    self.stdout.write(f"  [1] {citation['document']}{page}: {citation['quote'][:100]}…")
        minutes, rest = divmod(int(seconds), 60)
        self.stdout.write(f"\nPipeline {job.status} in {minutes} min {rest} s (job #{job.pk}; /d/{domain.slug}/jobs/)")


