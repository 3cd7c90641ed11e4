"""Distillation recipes as Jobs: QA pairs, paraphrases, retrieval examples, entities, judge data.

Each recipe walks a list of units (a chunk, or an approved pair). A unit's rows and its
RecipeCheckpoint are written in one transaction, so a worker killed mid-job loses at most
the unit it was on, and a rerun (the reaper's retry or a new job with the same settings)
skips every finished unit: no duplicates. Teachers run in threads (up to the teacher's
concurrency); only this module's main thread touches the database.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from datasets_app import teaching
from datasets_app.models import (
    EntityExample,
    JudgeExample,
    QADataset,
    QAPair,
    RecipeCheckpoint,
    RetrievalExample,
    TeacherConfig,
)
from domains.jobs import JobContext, job_handler
from domains.models import Chunk

logger = logging.getLogger("vsm.datasets")

TEACHER_FAILED = "teacher_failed"  # a unit the teacher could not answer (malformed output); retried on rerun


def _h(*parts: Any) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8")).hexdigest()


@dataclass
class Unit:
    """One piece of work: its checkpoint key and a plain payload the producer may use in a thread."""

    key: str
    payload: dict


@dataclass
class Output:
    """What a producer made of a unit: unsaved rows and rejection counts per filter."""

    rows: list = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    failed: str = ""  # the unit could not be done (no checkpoint; a rerun tries again)


class Recipe:
    """Base of the five recipes: list units, produce rows for one unit (thread-safe, no DB)."""

    name = ""
    message = ""

    def __init__(self, ctx: JobContext, dataset: QADataset):
        self.ctx = ctx
        self.dataset = dataset
        self.domain = dataset.domain
        self.lang = self.domain.language
        params = ctx.params
        teacher_id = params.get("teacher_id")
        self.config = (
            TeacherConfig.objects.filter(pk=teacher_id, domain=self.domain).first() if teacher_id else None
        )
        if teacher_id and self.config is None:
            ctx.fail("The teacher chosen for this job was deleted; choose another and start again.")
        self.teacher = teaching.build_teacher(self.config)
        self.label = teaching.teacher_label(self.config)
        self.signature = _h(self.label, self.config.model if self.config else "", json.dumps(self.settings(),
                                                                                            sort_keys=True))

    def settings(self) -> dict:
        return {}

    def units(self) -> list[Unit]:
        raise NotImplementedError

    def produce(self, unit: Unit) -> Output:
        raise NotImplementedError

    def ask(self, prompt, task_id: str):
        from datasets_app.engine.teachers import TeacherTask

        return self.teacher.generate(TeacherTask(prompt, task_id=task_id)).data

    @property
    def concurrency(self) -> int:
        return max(1, self.config.concurrency) if self.teacher is not None and self.config else 1


def _chunks(dataset: QADataset, params: dict):
    qs = Chunk.objects.for_domain(dataset.domain).select_related("document").order_by("document_id", "ordinal")
    if params.get("document_ids"):
        qs = qs.filter(document_id__in=params["document_ids"])
    return qs


def _chunk_payload(chunk: Chunk) -> dict:
    return {"chunk_id": chunk.pk, "document_id": chunk.document_id, "text": chunk.text,
            "heading_path": list(chunk.heading_path or []), "hash": chunk.content_hash}


def _locate(text: str, needle: str) -> tuple[int | None, int | None]:
    needle = (needle or "").strip()
    if not needle:
        return None, None
    pos = text.find(needle)
    return (pos, pos + len(needle)) if pos >= 0 else (None, None)


class QARecipe(Recipe):
    name = "qa"
    message = gettext_noop("Writing question–answer pairs")

    def settings(self):
        return {"per_chunk": int(self.ctx.params.get("per_chunk", 3))}

    def units(self):
        sig = self.signature
        return [Unit(_h("qa", c.content_hash, sig), _chunk_payload(c)) for c in _chunks(self.dataset, self.ctx.params)]

    def prepare(self, todo):
        from datasets_app.engine.textnorm import normalize_question

        self.seen = list(QAPair.objects.filter(dataset=self.dataset).values_list("question", flat=True))
        self.seen_norm = {normalize_question(q) for q in self.seen}

    def candidates(self, p: dict) -> list[dict]:
        n = self.settings()["per_chunk"]
        if self.teacher is None:
            from datasets_app.engine.offline_teacher import (
                OfflineTeacherConfig,
                TeacherChunk,
                generate_pairs,
            )

            chunk = TeacherChunk(text=p["text"], heading_path=tuple(p["heading_path"]), language=self.lang)
            return [c.to_dict() for c in generate_pairs(chunk, OfflineTeacherConfig(max_pairs=n))]
        from datasets_app.engine.prompts import qa_prompt

        title = " › ".join(p["heading_path"])
        data = self.ask(qa_prompt(p["text"], n, lang=self.lang, title=title), f"chunk:{p['chunk_id']}:qa")
        out = []
        for item in (data.get("pairs") or [])[:n]:
            start, end = _locate(p["text"], item.get("evidence", ""))
            out.append({"question": item["question"].strip(), "answer": item["answer"].strip(), "start": start,
                        "end": end, "rule": "llm", "confidence": None})
        return out

    def produce(self, unit):
        from datasets_app.engine.filters import apply_filters

        p = unit.payload
        cands = self.candidates(p)
        kept, _rejected, counts = apply_filters(cands, p["text"], seen_questions=self.seen)
        rows = [
            QAPair(
                domain_id=self.domain.pk, dataset=self.dataset, question=c["question"], answer=c["answer"],
                chunk_id=p["chunk_id"], document_id=p["document_id"], source_text=p["text"],
                evidence_start=c.get("start"), evidence_end=c.get("end"), source=QAPair.Source.TEACHER,
                teacher_label=self.label, rule=c.get("rule") or "", quality_score=c.get("confidence"),
                origin_key=_h(unit.key, i), job_id=self.ctx.job_id,
            )
            for i, c in enumerate(kept)
        ]
        return Output(rows, {k: v for k, v in counts.items() if v})

    def saved(self, out: Output):
        self.seen.extend(r.question for r in out.rows)


class DialogueRecipe(QARecipe):
    """Multi-turn dialogues grounded in one chunk: the teacher writes follow-up questions in order
    (the offline teacher's pairs of the chunk, in reading order), filtered like QA pairs; the
    earlier turns become the pair's history, so one reviewed pair is one ShareGPT conversation."""

    name = "dialogue"
    message = gettext_noop("Writing multi-turn dialogues")

    def settings(self):
        return {"turns": max(2, min(6, int(self.ctx.params.get("turns", self.ctx.params.get("per_chunk", 3)))))}

    def units(self):
        sig = self.signature
        return [Unit(_h("dialogue", c.content_hash, sig), _chunk_payload(c))
                for c in _chunks(self.dataset, self.ctx.params)]

    def candidates(self, p: dict) -> list[dict]:
        n = self.settings()["turns"]
        if self.teacher is None:
            from datasets_app.engine.offline_teacher import OfflineTeacherConfig, TeacherChunk, generate_pairs

            chunk = TeacherChunk(text=p["text"], heading_path=tuple(p["heading_path"]), language=self.lang)
            return [{**c.to_dict(), "rule": "dialogue"} for c in generate_pairs(chunk, OfflineTeacherConfig(max_pairs=n))]
        from datasets_app.engine.prompts import dialogue_prompt

        title = " › ".join(p["heading_path"])
        data = self.ask(dialogue_prompt(p["text"], n, lang=self.lang, title=title), f"chunk:{p['chunk_id']}:dialogue")
        out = []
        for item in (data.get("pairs") or [])[:n]:
            start, end = _locate(p["text"], item.get("evidence", ""))
            out.append({"question": item["question"].strip(), "answer": item["answer"].strip(), "start": start,
                        "end": end, "rule": "dialogue", "confidence": None})
        return out

    def produce(self, unit):
        from datasets_app.engine.filters import FilterConfig, apply_filters

        p = unit.payload
        cands = self.candidates(p)
        # The opening question must stand alone; the follow-ups may lean on it ("那一线城市呢？"), so
        # only they skip the context-dependence filter.
        opening, _rejected, counts = apply_filters(cands[:1], p["text"], seen_questions=self.seen)
        follow, _rejected, more = apply_filters(cands[1:], p["text"], FilterConfig(check_context=False),
                                                seen_questions=[*self.seen, *(c["question"] for c in opening)])
        kept = opening + follow if opening else []
        counts = {k: counts.get(k, 0) + more.get(k, 0) for k in {*counts, *more} if counts.get(k, 0) + more.get(k, 0)}
        if len(kept) < 2:  # one turn is not a dialogue (the QA recipe makes single pairs)
            counts["too_few_turns"] = counts.get("too_few_turns", 0) + 1
            return Output([], counts)
        last = kept[-1]
        pair = QAPair(
            domain_id=self.domain.pk, dataset=self.dataset, question=last["question"], answer=last["answer"],
            history=[[c["question"], c["answer"]] for c in kept[:-1]], chunk_id=p["chunk_id"],
            document_id=p["document_id"], source_text=p["text"], evidence_start=last.get("start"),
            evidence_end=last.get("end"), source=QAPair.Source.TEACHER, teacher_label=self.label, rule="dialogue",
            origin_key=_h(unit.key, 0), job_id=self.ctx.job_id,
        )
        return Output([pair], counts)


class ParaphraseRecipe(Recipe):
    name = "paraphrase"
    message = gettext_noop("Paraphrasing approved questions")

    def settings(self):
        return {"variants": int(self.ctx.params.get("variants", 3))}

    def units(self):
        pairs = QAPair.objects.filter(dataset=self.dataset, status=QAPair.Status.APPROVED, parent__isnull=True)
        return [
            Unit(_h("paraphrase", pr.pk, pr.question, self.signature),
                 {"pair_id": pr.pk, "question": pr.question, "answer": pr.answer, "chunk_id": pr.chunk_id,
                  "document_id": pr.document_id, "source_text": pr.source_text, "held_out": pr.held_out,
                  "evidence": [pr.evidence_start, pr.evidence_end]})
            for pr in pairs.order_by("pk")
        ]

    def prepare(self, todo):
        from datasets_app.engine.textnorm import normalize_question

        self.seen_norm = {normalize_question(q) for q in
                          QAPair.objects.filter(dataset=self.dataset).values_list("question", flat=True)}

    def produce(self, unit):
        from datasets_app.engine.filters import DUPLICATE, INSTRUCTION
        from datasets_app.engine.textnorm import (
            looks_like_injection,
            normalize_question,
        )

        p = unit.payload
        n = self.settings()["variants"]
        if self.teacher is None:
            from datasets_app.engine.offline_recipes import paraphrase_question

            variants = paraphrase_question(p["question"], n, lang=self.lang)
        else:
            from datasets_app.engine.prompts import paraphrase_prompt

            data = self.ask(paraphrase_prompt(p["question"], n, answer=p["answer"], lang=self.lang),
                            f"pair:{p['pair_id']}:paraphrase")
            variants = [str(v).strip() for v in (data.get("paraphrases") or [])[:n]]
        rows, counts = [], Counter()
        for i, q in enumerate(v for v in variants if v):
            norm = normalize_question(q)
            if norm in self.seen_norm:
                counts[DUPLICATE] += 1
                continue
            if looks_like_injection(q):
                counts[INSTRUCTION] += 1
                continue
            self.seen_norm.add(norm)
            rows.append(QAPair(
                domain_id=self.domain.pk, dataset=self.dataset, question=q, answer=p["answer"], parent_id=p["pair_id"],
                chunk_id=p["chunk_id"], document_id=p["document_id"], source_text=p["source_text"],
                evidence_start=p["evidence"][0], evidence_end=p["evidence"][1], held_out=p["held_out"],
                source=QAPair.Source.PARAPHRASE, teacher_label=self.label, rule="paraphrase",
                origin_key=_h(unit.key, i), job_id=self.ctx.job_id,
            ))
        return Output(rows, dict(counts))


def _mine(domain, todo: list[Unit], config) -> dict[str, tuple[Any, bool]]:
    """Hard negatives for every unit's (question, chunk) at once: unit key → (record, skipped)."""
    from datasets_app.engine.formats import RetrievalRecord
    from datasets_app.engine.negatives import CorpusChunk, mine_hard_negatives

    corpus = [
        CorpusChunk(id=str(c.pk), text=c.text, document=str(c.document_id), heading_path=tuple(c.heading_path or []))
        for c in Chunk.objects.for_domain(domain).only("pk", "text", "document_id", "heading_path")
    ]
    records = [RetrievalRecord(u.payload["question"], str(u.payload["chunk_id"] or ""),
                               u.payload.get("text") or u.payload.get("passage", ""), score=1.0) for u in todo]
    result = mine_hard_negatives(records, corpus, config)
    skipped = {i for i, _why in result.skipped}
    return {u.key: (result.records[i], i in skipped) for i, u in enumerate(todo)}


class RetrievalRecipe(Recipe):
    """Query → positive chunk from approved pairs, hard negatives mined from a BM25 rank window."""

    name = "retrieval"
    message = gettext_noop("Mining retrieval examples")

    def settings(self):
        p = self.ctx.params
        return {"rank_start": int(p.get("rank_start", 30)), "rank_end": int(p.get("rank_end", 100)),
                "num_negatives": int(p.get("num_negatives", 7))}

    def units(self):
        pairs = QAPair.objects.filter(dataset=self.dataset, status=QAPair.Status.APPROVED, chunk__isnull=False)
        return [
            Unit(_h("retrieval", pr.pk, pr.question, pr.chunk_id, self.signature),
                 {"pair_id": pr.pk, "question": pr.question, "chunk_id": pr.chunk_id, "held_out": pr.held_out,
                  "text": pr.chunk.text})
            for pr in pairs.select_related("chunk").order_by("pk")
        ]

    def prepare(self, todo):
        from datasets_app.engine.negatives import MiningConfig

        # One BM25 index over the domain for the whole run, not one per unit.
        self.mined = _mine(self.domain, todo, MiningConfig(**self.settings()))

    def produce(self, unit):
        p = unit.payload
        mined, skipped = self.mined[unit.key]
        counts = {"no_hard_negative": 1} if skipped else {}
        row = RetrievalExample(
            domain_id=self.domain.pk, dataset=self.dataset, query=p["question"], chunk_id=p["chunk_id"],
            positive_text=p["text"], negatives=[list(n) for n in mined.negatives], score=1.0,
            pair_id=p["pair_id"], held_out=p["held_out"], origin_key=_h(unit.key, 0), job_id=self.ctx.job_id,
        )
        return Output([row], counts)


class EntityRecipe(Recipe):
    """Typed entities per sentence of each chunk (short texts suit the extraction model)."""

    name = "entities"
    message = gettext_noop("Annotating entities")
    MAX_SENTENCE = 200

    def units(self):
        return [Unit(_h("entities", c.content_hash, self.signature), _chunk_payload(c))
                for c in _chunks(self.dataset, self.ctx.params)]

    def produce(self, unit):
        from datasets_app.engine.textnorm import split_sentences

        p = unit.payload
        text = p["text"]
        if self.teacher is None:
            from datasets_app.engine.offline_recipes import annotate_entities

            spans = [(s.start, s.end + 1, s.label) for s in annotate_entities(text, lang=self.lang)]
        else:
            from datasets_app.engine.prompts import entities_prompt

            data = self.ask(entities_prompt(text, lang=self.lang), f"chunk:{p['chunk_id']}:entities")
            spans = []
            for ent in data.get("entities") or []:
                mention = str(ent.get("text", "")).strip()
                start = text.find(mention) if mention else -1
                while start >= 0:
                    spans.append((start, start + len(mention), ent.get("type", "other")))
                    start = text.find(mention, start + len(mention))
        rows, counts = [], Counter()
        for i, sent in enumerate(split_sentences(text)):
            if sent.end - sent.start > self.MAX_SENTENCE:
                counts["sentence_too_long"] += 1
                continue
            inside = sorted({(s - sent.start, e - sent.start, label) for s, e, label in spans
                             if s >= sent.start and e <= sent.end})
            if not inside:
                continue
            stext = text[sent.start:sent.end]
            kept, last_end = [], -1
            for s, e, label in inside:  # no overlaps: earlier, then longer, wins
                if s < last_end:
                    counts["overlapping_entity"] += 1
                    continue
                kept.append({"label": label, "start": s, "end": e - 1, "mention": stext[s:e]})
                last_end = e
            rows.append(EntityExample(
                domain_id=self.domain.pk, dataset=self.dataset, text=stext, spans=kept, chunk_id=p["chunk_id"],
                teacher_label=self.label, origin_key=_h(unit.key, i), job_id=self.ctx.job_id,
            ))
        return Output(rows, dict(counts))


class JudgeRecipe(Recipe):
    """(question, passage) → <think> analysis + aligned / not_aligned, labels known by construction."""

    name = "judge"
    message = gettext_noop("Writing judge examples")

    def units(self):
        pairs = QAPair.objects.filter(dataset=self.dataset, status=QAPair.Status.APPROVED).exclude(source_text="")
        return [
            Unit(_h("judge", pr.pk, pr.question, pr.answer, self.signature),
                 {"pair_id": pr.pk, "question": pr.question, "answer": pr.answer, "passage": pr.source_text,
                  "chunk_id": pr.chunk_id, "evidence": pr.evidence})
            for pr in pairs.order_by("pk")
        ]

    def prepare(self, todo):
        from datasets_app.engine.negatives import MiningConfig

        self.mined = _mine(self.domain, [u for u in todo if u.payload["chunk_id"]],
                           MiningConfig(rank_start=2, rank_end=30, num_negatives=1))

    def analysis(self, p: dict, passage: str, aligned: bool) -> str:
        from datasets_app.engine import judge_data

        if self.teacher is None:
            return judge_data.offline_analysis(p["question"], p["answer"], passage, aligned=aligned,
                                               evidence=p["evidence"] if aligned else "", lang=self.lang)
        from datasets_app.engine.prompts import judge_prompt

        data = self.ask(judge_prompt(p["question"], p["answer"], passage[:1500], chunk=passage, lang=self.lang),
                        f"pair:{p['pair_id']}:judge")
        teacher_aligned = data.get("verdict") in ("correct", "partially_correct")
        if teacher_aligned != aligned:
            return ""  # the teacher disagrees with the construction: drop rather than teach noise
        return str(data.get("think", "")).strip()

    def produce(self, unit):
        from datasets_app.engine import judge_data

        p = unit.payload
        cases = [(p["passage"], True, p["chunk_id"])]
        if unit.key in self.mined:
            mined, _skipped = self.mined[unit.key]
            cases += [(text, False, int(cid)) for cid, text in mined.negatives]
        rows, counts = [], Counter()
        if len(cases) == 1:
            counts["no_negative_passage"] += 1
        for i, (passage, aligned, chunk_id) in enumerate(cases):
            analysis = self.analysis(p, passage, aligned)
            if not analysis:
                counts["teacher_disagrees"] += 1
                continue
            label = judge_data.LABEL_ALIGNED if aligned else judge_data.LABEL_NOT_ALIGNED
            rows.append(JudgeExample(
                domain_id=self.domain.pk, dataset=self.dataset, question=p["question"], passage=passage,
                analysis=analysis, label=label, chunk_id=chunk_id, pair_id=p["pair_id"], teacher_label=self.label,
                messages=judge_data.judge_sharegpt(p["question"], passage, analysis, label, self.lang)["messages"],
                origin_key=_h(unit.key, i), job_id=self.ctx.job_id,
            ))
        return Output(rows, dict(counts))


RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (QARecipe, DialogueRecipe, ParaphraseRecipe, RetrievalRecipe,
                                                         EntityRecipe, JudgeRecipe)}


def _save(recipe: Recipe, unit: Unit, out: Output) -> bool:
    """Rows and checkpoint in one transaction; False if another run already finished the unit."""
    try:
        with transaction.atomic():
            RecipeCheckpoint.objects.create(dataset=recipe.dataset, recipe=recipe.name, item_key=unit.key,
                                            job_id=recipe.ctx.job_id, produced=len(out.rows), rejected=out.rejected)
            for row in out.rows:
                row.save()
    except IntegrityError:
        return False
    saved = getattr(recipe, "saved", None)
    if saved:
        saved(out)
    return True


def _results(recipe: Recipe, todo: list[Unit]) -> Iterable[tuple[Unit, Output]]:
    """Produce outputs in unit order; teacher calls run ``concurrency`` at a time."""
    from datasets_app.engine.teachers import TeacherError

    def safe(unit: Unit) -> Output:
        try:
            return recipe.produce(unit)
        except TeacherError as exc:  # malformed output for this unit only; the others go on
            return Output(failed=str(exc))

    if recipe.concurrency <= 1:
        for unit in todo:
            yield unit, safe(unit)
        return
    with ThreadPoolExecutor(max_workers=recipe.concurrency, thread_name_prefix=f"job-{recipe.ctx.job_id}") as pool:
        window = recipe.concurrency * 2
        for start in range(0, len(todo), window):
            batch = todo[start:start + window]
            yield from zip(batch, pool.map(safe, batch))


def run_recipe(ctx: JobContext, name: str) -> dict:
    from datasets_app.engine.keys import AllKeysFailed, FatalTeacherError, KeyPoolError
    from datasets_app.engine.teachers import TeacherError

    dataset = QADataset.objects.select_related("domain").filter(pk=ctx.params.get("dataset_id"),
                                                                domain=ctx.domain).first()
    if dataset is None:
        ctx.fail("The dataset was deleted before the job started.")
    try:
        recipe = RECIPES[name](ctx, dataset)
    except TeacherError as exc:
        ctx.fail(str(exc))
    units = recipe.units()
    keys = [u.key for u in units]
    done_keys = set(RecipeCheckpoint.objects.filter(dataset=dataset, recipe=name, item_key__in=keys)
                    .values_list("item_key", flat=True))
    todo = [u for u in units if u.key not in done_keys]
    total = len(units)
    ctx.log(f"{name}: {total} unit(s), {len(done_keys)} already done, teacher: {recipe.label}")
    ctx.progress(len(done_keys), total, message=recipe.message)
    prepare = getattr(recipe, "prepare", None)
    if prepare and todo:
        prepare(todo)
    done, made, failed = len(done_keys), 0, 0
    error = ""
    try:
        for unit, out in _results(recipe, todo):
            ctx.check_cancelled()
            if out.failed:
                failed += 1
                ctx.log(recipe.teacher.pool.redact(out.failed) if recipe.teacher and recipe.teacher.pool
                        else out.failed)
            elif _save(recipe, unit, out):
                made += len(out.rows)
            done += 1
            ctx.progress(done, total, message=recipe.message)
            if done % 20 == 0:
                ctx.report(**_summary(recipe, keys, made, failed))
    except (AllKeysFailed, FatalTeacherError, KeyPoolError) as exc:
        error = str(exc)  # the pool's messages carry key ids, never secrets
    finally:
        if recipe.teacher is not None:
            teaching.record_usage(recipe.config, recipe.teacher.usage())
    summary = _summary(recipe, keys, made, failed)
    if error:
        ctx.report(**summary)
        ctx.fail(f"{error} {made} new row(s) from this run are kept; start the job again to continue.")
    ctx.log(f"{made} new row(s); rejected by filter: {summary['filters'] or 'none'}")
    if failed:
        ctx.log(f"{failed} unit(s) failed at the teacher and will be retried by the next run")
    return summary


def _summary(recipe: Recipe, keys: list[str], made: int, failed: int) -> dict:
    counts: Counter[str] = Counter()
    produced = 0
    for rejected, n in RecipeCheckpoint.objects.filter(dataset=recipe.dataset, recipe=recipe.name,
                                                        item_key__in=keys).values_list("rejected", "produced"):
        counts.update(rejected or {})
        produced += n
    if failed:
        counts[TEACHER_FAILED] += failed
    out = {"recipe": recipe.name, "dataset_id": recipe.dataset.pk, "teacher": recipe.label, "units": len(keys),
           "new_rows": made, "rows_total": produced, "filters": dict(sorted(counts.items()))}
    if recipe.teacher is not None:
        out["usage"] = recipe.teacher.usage()
    return out


def _handler(name: str) -> Callable[[JobContext], dict]:
    def handle(ctx: JobContext) -> dict:
        return run_recipe(ctx, name)

    handle.__name__ = f"distill_{name}"
    return handle


job_handler("distill_qa", _("Write QA pairs"))(_handler("qa"))
job_handler("distill_paraphrase", _("Paraphrase questions"))(_handler("paraphrase"))
job_handler("distill_retrieval", _("Mine retrieval examples"))(_handler("retrieval"))
job_handler("distill_entities", _("Annotate entities"))(_handler("entities"))
job_handler("distill_judge", _("Write judge examples"))(_handler("judge"))
job_handler("distill_dialogue", _("Write multi-turn dialogues"))(_handler("dialogue"))

RECIPE_KINDS = {name: f"distill_{name}" for name in RECIPES}
