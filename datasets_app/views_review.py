"""The expert review queue: filtered pairs with progress, one pair beside its source passage,
review actions and edits with history, bulk approval and assignment.

Same rules as the other pages: every view starts at the access gate (viewers read, experts
and owners act), the workflows are ``datasets_app.services``' (a view parses input, calls the
service and shows the outcome), and htmx requests get a partial of the same template. The
filters travel as query parameters on every link and post, so "next" and "bulk approve" mean
the same set of pairs the reviewer is looking at.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from datasets_app import services
from datasets_app.forms_review import (
    AssignForm,
    PairEditForm,
    ReviewActionForm,
    ReviewFilterForm,
    reviewers_of,
)
from datasets_app.models import QAPair, QAPairEvent
from domains import access as gate
from domains.forms import apply_errors
from domains.models import Role

PAIRS_PER_PAGE = 25

# Filters ------------------------------------------------------------------------------------


@dataclass
class Progress:
    """'x of y reviewed' for a set of pairs; double review adds those waiting for a second verdict."""

    reviewed: int
    total: int
    awaiting_second: int = 0
    disagreements: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.reviewed / self.total) if self.total else 0


@dataclass
class Queue:
    """The reviewer's filtered set of pairs, as the query string describes it."""

    form: ReviewFilterForm
    values: dict
    pairs: QuerySet  # every filter applied, in review order
    scope: QuerySet  # every filter but the status: what the progress bar counts
    querystring: str = ""
    progress: Progress = field(default=None)  # type: ignore[assignment]

    def url(self, **override) -> str:
        """The query string of this filter with some values changed (None removes one)."""
        values = {**self.values, **override}
        return urlencode({k: _param(v) for k, v in values.items() if v not in (None, "")})


def _param(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _apply(pairs: QuerySet, values: dict, user, *, status: bool = True) -> QuerySet:
    if "dataset" in values:
        pairs = pairs.filter(dataset_id=values["dataset"])
    if "document" in values:
        pairs = pairs.filter(document_id=values["document"])
    if status and "status" in values:
        pairs = pairs.filter(status=values["status"])
    if "source" in values:
        pairs = pairs.filter(source=values["source"])
    if "min_score" in values:
        pairs = pairs.filter(quality_score__gte=values["min_score"])
    if "reviewer" in values:
        pairs = pairs.filter(Q(reviewed_by_id=values["reviewer"]) | Q(second_reviewed_by_id=values["reviewer"]))
    assigned = values.get("assigned")
    if assigned == "me":
        pairs = pairs.filter(assigned_to=user)
    elif assigned == "none":
        pairs = pairs.filter(assigned_to__isnull=True)
    elif assigned:
        pairs = pairs.filter(assigned_to_id=int(assigned))
    if "q" in values:
        pairs = pairs.filter(Q(question__icontains=values["q"]) | Q(answer__icontains=values["q"]))
    return pairs


def _progress(scope: QuerySet) -> Progress:
    decided = [QAPair.Status.APPROVED, QAPair.Status.REJECTED]
    counts = scope.aggregate(
        total=Count("pk"),
        reviewed=Count("pk", filter=~Q(status=QAPair.Status.PENDING)),
        awaiting=Count("pk", filter=Q(dataset__double_review=True, status__in=decided, second_verdict="",
                                      reviewed_by__isnull=False)),
        disagree=Count("pk", filter=~Q(second_verdict="") & ~Q(second_verdict=F("status"))),
    )
    return Progress(counts["reviewed"], counts["total"], counts["awaiting"], counts["disagree"])


def _queue(request: HttpRequest, access: gate.Access) -> Queue:
    form = ReviewFilterForm(request.GET, domain=access.domain, user=request.user)
    values = form.values()
    base = QAPair.objects.for_domain(access.domain)
    pairs = _apply(base, values, request.user).order_by("pk")
    scope = _apply(base, values, request.user, status=False)
    queue = Queue(form=form, values=values, pairs=pairs, scope=scope)
    queue.querystring = queue.url()
    queue.progress = _progress(scope)
    return queue


def _with_query(url: str, querystring: str) -> str:
    return f"{url}?{querystring}" if querystring else url


def _queue_url(access: gate.Access, queue: Queue) -> str:
    return _with_query(reverse("review-queue", args=[access.domain.slug]), queue.querystring)


def _pair_url(access: gate.Access, pk: int, queue: Queue) -> str:
    return _with_query(reverse("pair-review", args=[access.domain.slug, pk]), queue.querystring)


# Queue --------------------------------------------------------------------------------------


@login_required
@require_GET
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's pairs under the reviewer's filters, with 'x of y reviewed'. htmx: the list only."""
    access = gate.for_request(request, slug)
    queue = _queue(request, access)
    listed = queue.pairs.select_related("document", "dataset", "assigned_to", "reviewed_by", "second_reviewed_by")
    page = Paginator(listed, PAIRS_PER_PAGE).get_page(request.GET.get("page"))
    by_status = dict(queue.scope.order_by().values_list("status").annotate(n=Count("pk")))
    status_links = [("", _("All"), sum(by_status.values()), queue.url(status=None))] + [
        (value, label, by_status.get(value, 0), queue.url(status=value)) for value, label in QAPair.Status.choices
    ]
    first = queue.pairs.filter(status=QAPair.Status.PENDING).first() or queue.pairs.first()
    context = {
        "access": access,
        "domain": access.domain,
        "section": "review",
        "queue": queue,
        "form": queue.form,
        "page": page,
        "pairs": page.object_list,
        "status_links": status_links,
        "status_filter": queue.values.get("status", ""),
        "pending_count": queue.pairs.filter(status=QAPair.Status.PENDING).count(),
        "start_url": _pair_url(access, first.pk, queue) if first else "",
        "assign_form": AssignForm(domain=access.domain),
        "double_review": queue.scope.filter(dataset__double_review=True).exists(),
        "mine_pending": QAPair.objects.for_domain(access.domain).pending().filter(assigned_to=request.user).count(),
        "mine_url": urlencode({"assigned": "me", "status": QAPair.Status.PENDING}),
    }
    template = "datasets/review_queue.html"
    if request.htmx and not request.htmx.history_restore_request:
        template += "#review-list"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def review_bulk(request: HttpRequest, slug: str) -> HttpResponse:
    """Approve every *pending* pair of the filter; pairs someone already decided on keep their review."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    queue = _queue(request, access)
    changed = services.bulk_review(queue.pairs, by=request.user, action="approve")
    if changed:
        messages.success(request, _("%(n)d pending pairs approved.") % {"n": changed})
    else:
        messages.info(request, _("No pending pairs match these filters; nothing was approved."))
    return redirect(_queue_url(access, queue))


@login_required
@require_POST
def review_assign(request: HttpRequest, slug: str) -> HttpResponse:
    """Give the ticked pairs (or all pairs of the filter) to a reviewer, or take them back."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    queue = _queue(request, access)
    back = redirect(_queue_url(access, queue))
    form = AssignForm(request.POST, domain=access.domain)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return back
    to = None
    if form.cleaned_data["to"] != "none":
        to = reviewers_of(access.domain).filter(pk=int(form.cleaned_data["to"])).first()
        if to is None:
            messages.error(request, _("Pairs can only be assigned to experts and owners of this domain."))
            return back
    if form.cleaned_data["scope"] == "all":
        pairs = queue.pairs
    else:
        pairs = QAPair.objects.for_domain(access.domain).filter(pk__in=form.cleaned_data["ids"])
    if not pairs.exists():
        messages.info(request, _("No pairs to assign."))
        return back
    try:
        changed = services.assign_pairs(pairs, to=to, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return back
    if to is None:
        messages.success(request, _("%(n)d pairs are no longer assigned.") % {"n": changed})
    else:
        messages.success(request, _("%(n)d pairs assigned to %(name)s.") % {"n": changed, "name": to.get_username()})
    return back


# Evidence ------------------------------------------------------------------------------------

NUMBER = re.compile(r"\d+(?:[.,:：/-]\d+)*%?")
SPLIT = re.compile(r"[\s,.;:!?()\[\]{}<>\"'“”‘’、，。；：！？（）《》【】「」『』…—-]+")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z\-']{3,}")
MIN_CJK_TERM = 2
MAX_TERMS = 40


def _answer_terms(answer: str, source: str) -> list[str]:
    """Numbers and phrases of the answer that occur in the source, for pairs without an evidence span."""
    answer = answer[:600]
    lowered = source.lower()
    terms: set[str] = set()
    for number in NUMBER.findall(answer):
        if number in source:
            terms.add(number)
    for segment in SPLIT.split(answer):
        segment = segment.strip()
        if not segment:
            continue
        if not CJK.search(segment):
            terms.update(w for w in LATIN_WORD.findall(segment) if w.lower() in lowered)
            continue
        if len(segment) >= MIN_CJK_TERM and segment in source:
            terms.add(segment)
            continue
        # The longest pieces of the segment found in the source, left to right.
        segment, i = segment[:80], 0
        while i < len(segment) - MIN_CJK_TERM + 1:
            for j in range(len(segment), i + MIN_CJK_TERM - 1, -1):
                if CJK.search(segment[i:j]) and segment[i:j] in source:
                    terms.add(segment[i:j])
                    i = j
                    break
            else:
                i += 1
    return sorted(terms, key=len, reverse=True)[:MAX_TERMS]


def highlight_source(source: str, start: int | None, end: int | None, answer: str) -> tuple[SafeString, str]:
    """The source passage as HTML with the evidence marked; the mode says what was marked.

    ``span``: the evidence offsets recorded with the pair; ``terms``: no valid span, so the
    answer's numbers and terms found in the passage; ``none``: nothing could be marked.
    """
    if start is not None and end is not None and 0 <= start < end <= len(source):
        html = (escape(source[:start]) + mark_safe('<mark class="evidence">') + escape(source[start:end])
                + mark_safe("</mark>") + escape(source[end:]))
        return mark_safe(html), "span"
    terms = _answer_terms(answer, source)
    if not terms:
        return escape(source), "none"
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    parts, last = [], 0
    for match in pattern.finditer(source):
        parts.append(escape(source[last:match.start()]))
        parts.append(mark_safe('<mark class="term">') + escape(match.group()) + mark_safe("</mark>"))
        last = match.end()
    parts.append(escape(source[last:]))
    return mark_safe("".join(parts)), "terms"


# One pair -----------------------------------------------------------------------------------

FIELD_LABELS = {
    "question": gettext_lazy("Question"),
    "answer": gettext_lazy("Answer"),
    "status": gettext_lazy("Status"),
    "reject_reason": gettext_lazy("Reason"),
    "held_out": gettext_lazy("Held-out"),
    "assigned_to_id": gettext_lazy("Assigned to"),
    "second_verdict": gettext_lazy("Second verdict"),
}
ACTION_LABELS = {
    "create": gettext_lazy("Created"),
    "import": gettext_lazy("Imported"),
    "edit": gettext_lazy("Edited"),
    "approve": gettext_lazy("Approved"),
    "reject": gettext_lazy("Rejected"),
    "needs_edit": gettext_lazy("Marked: needs edit"),
    "reopen": gettext_lazy("Reopened"),
    "assign": gettext_lazy("Assigned"),
    "second_review": gettext_lazy("Second review"),
}
NOTICES = {
    "approve": gettext_lazy("Approved."),
    "reject": gettext_lazy("Rejected."),
    "needs_edit": gettext_lazy("Marked as needing an edit."),
    "reopen": gettext_lazy("Reopened: the pair is pending again."),
    "second_review": gettext_lazy("Your second review is recorded."),
}


@dataclass
class Change:
    label: str
    before: str
    after: str


@dataclass
class HistoryRow:
    event: QAPairEvent
    label: str
    changes: list[Change]


def _shown(name: str, value, users: dict[int, str]) -> str:
    if value in (None, ""):
        return "—"
    if name in ("status", "second_verdict"):
        try:
            return str(QAPair.Status(value).label)
        except ValueError:
            return str(value)
    if name == "held_out":
        return _("yes") if value else _("no")
    if name == "assigned_to_id":
        return users.get(value, f"#{value}")
    return str(value)


def _history(pair: QAPair) -> list[HistoryRow]:
    events = list(QAPairEvent.objects.filter(pair=pair).select_related("actor").order_by("-at", "-id"))
    user_ids = {e.before.get("assigned_to_id") for e in events} | {e.after.get("assigned_to_id") for e in events}
    users = dict(get_user_model().objects.filter(pk__in=[i for i in user_ids if i]).values_list("pk", "username"))
    rows = []
    for event in events:
        names = [n for n in FIELD_LABELS if n in event.before or n in event.after]
        if event.action in ("create", "import"):
            names = [n for n in ("question", "answer", "status", "held_out") if n in event.after]
        changes = [Change(str(FIELD_LABELS[n]), _shown(n, event.before.get(n), users),
                          _shown(n, event.after.get(n), users)) for n in names]
        rows.append(HistoryRow(event, str(ACTION_LABELS.get(event.action, event.action)), changes))
    return rows


def _second_review_open(pair: QAPair, user) -> bool:
    """The dataset wants two reviewers and this user would be the second (mirrors services.review_pair)."""
    return bool(
        pair.dataset.double_review
        and pair.status in (QAPair.Status.APPROVED, QAPair.Status.REJECTED)
        and pair.reviewed_by_id is not None
        and pair.reviewed_by_id != user.pk
        and not pair.second_verdict
    )


def _pair_of(access: gate.Access, pk: int) -> QAPair:
    return get_object_or_404(
        QAPair.objects.for_domain(access.domain).select_related(
            "dataset", "document", "chunk", "assigned_to", "reviewed_by", "second_reviewed_by", "created_by"),
        pk=pk,
    )


def _pair_context(request: HttpRequest, access: gate.Access, pair: QAPair, queue: Queue, **extra) -> dict:
    source = pair.source_text or (pair.chunk.text if pair.chunk else "")
    start, end = (pair.evidence_start, pair.evidence_end) if pair.source_text else (None, None)
    highlighted, mode = highlight_source(source, start, end, pair.answer)
    previous = queue.pairs.filter(pk__lt=pair.pk).order_by("-pk").first()
    following = queue.pairs.filter(pk__gt=pair.pk).order_by("pk").first()
    in_filter = queue.pairs.filter(pk=pair.pk).exists()
    second = _second_review_open(pair, request.user)
    allowed = set(services.ALLOWED[QAPair.Status(pair.status)]) | ({"approve", "reject"} if second else set())
    edit_form = extra.pop("edit_form", None) or PairEditForm(initial={
        "question": pair.question, "answer": pair.answer, "held_out": pair.held_out, "version": pair.version})
    context = {
        "access": access,
        "domain": access.domain,
        "section": "review",
        "pair": pair,
        "queue": queue,
        "source_html": highlighted,
        "highlight_mode": mode,
        "chunk": pair.chunk,
        "previous_url": _pair_url(access, previous.pk, queue) if previous else "",
        "next_url": _pair_url(access, following.pk, queue) if following else "",
        "queue_url": _queue_url(access, queue),
        "position": queue.pairs.filter(pk__lte=pair.pk).count() if in_filter else None,
        "in_filter": in_filter,
        "count": queue.pairs.count(),
        "allowed": allowed,
        "second_review": second,
        "awaiting_second": bool(pair.dataset.double_review and pair.status in (
            QAPair.Status.APPROVED, QAPair.Status.REJECTED) and pair.reviewed_by_id and not pair.second_verdict),
        "history": _history(pair),
        "edit_form": edit_form,
        "action_url": _with_query(reverse("pair-action", args=[access.domain.slug, pair.pk]), queue.querystring),
        "edit_url": _with_query(reverse("pair-edit", args=[access.domain.slug, pair.pk]), queue.querystring),
        "this_url": _pair_url(access, pair.pk, queue),
        "reason": "",
    }
    context.update(extra)
    return context


def _render_pair(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    template = "datasets/pair_review.html"
    if request.htmx and not request.htmx.history_restore_request:
        template += "#pair-panel"
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_GET
def pair_review(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One pair beside its source passage with the evidence marked, who made it, and its history."""
    access = gate.for_request(request, slug)
    pair = _pair_of(access, pk)
    return _render_pair(request, _pair_context(request, access, pair, _queue(request, access)))


def _conflict(request: HttpRequest, access: gate.Access, queue: Queue, current: QAPair, expected: int,
              mine: dict) -> HttpResponse:
    """409: the pair changed under the reviewer. Show the current text and theirs; save nothing."""
    current = _pair_of(access, current.pk)
    edit_form = PairEditForm(initial={
        "question": mine.get("question") or current.question,
        "answer": mine.get("answer") or current.answer,
        "held_out": mine.get("held_out", current.held_out),
        "version": current.version,
    })
    conflict = {"expected": expected, "mine": mine, "action_label": NOTICES.get(mine.get("action", ""), "")}
    context = _pair_context(request, access, current, queue, conflict=conflict, edit_form=edit_form,
                            edit_open=bool(mine.get("question") or mine.get("answer")),
                            reason=mine.get("reason", ""))
    return _render_pair(request, context, status=409)


def _next_after(access: gate.Access, queue: Queue, pk: int) -> str:
    """Where a reviewer goes after acting without JS: the next pair of the filter (wrapping), else the queue."""
    following = (queue.pairs.filter(pk__gt=pk).order_by("pk").first()
                 or queue.pairs.exclude(pk=pk).order_by("pk").first())
    return _pair_url(access, following.pk, queue) if following else _queue_url(access, queue)


@login_required
@require_POST
def pair_action(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """approve / reject / needs_edit / reopen, optionally with edits; a stale version answers 409."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    pair = _pair_of(access, pk)
    queue = _queue(request, access)
    form = ReviewActionForm(request.POST)
    edits = {name: request.POST[name] for name in ("question", "answer") if name in request.POST}
    if not form.is_valid():
        context = _pair_context(request, access, pair, queue, action_errors=form.errors,
                                reason=request.POST.get("reason", ""))
        return _render_pair(request, context, status=400)
    action, reason, version = form.cleaned_data["action"], form.cleaned_data["reason"], form.cleaned_data["version"]
    mine = {"action": action, "reason": reason, **edits}
    if version != pair.version:
        return _conflict(request, access, queue, pair, version, mine)
    second = _second_review_open(pair, request.user) and action in ("approve", "reject")
    try:
        pair = services.review_pair(pair, by=request.user, action=action, expected_version=version, reason=reason,
                                    question=edits.get("question"), answer=edits.get("answer"))
    except services.EditConflict as exc:
        return _conflict(request, access, queue, exc.current, exc.expected, mine)
    except ValidationError as exc:
        context = _pair_context(request, access, pair, queue, action_errors={"": exc.messages}, reason=reason)
        return _render_pair(request, context, status=400)
    notice = NOTICES["second_review" if second else action]
    queue = _queue(request, access)  # the progress moved
    if request.htmx:
        return _render_pair(request, _pair_context(request, access, _pair_of(access, pk), queue, notice=notice))
    messages.success(request, notice)
    return redirect(_next_after(access, queue, pk))


@login_required
@require_POST
def pair_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Change question / answer / held-out against the version the editor loaded; stale → 409."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    pair = _pair_of(access, pk)
    queue = _queue(request, access)
    form = PairEditForm(request.POST)
    if not form.is_valid():
        return _render_pair(request, _pair_context(request, access, pair, queue, edit_form=form, edit_open=True),
                            status=400)
    data = form.cleaned_data
    mine = {"action": "edit", "question": data["question"], "answer": data["answer"], "held_out": data["held_out"]}
    if data["version"] != pair.version:
        return _conflict(request, access, queue, pair, data["version"], mine)
    try:
        services.edit_pair(pair, by=request.user, expected_version=data["version"], question=data["question"],
                           answer=data["answer"], held_out=data["held_out"])
    except services.EditConflict as exc:
        return _conflict(request, access, queue, exc.current, exc.expected, mine)
    except ValidationError as exc:
        apply_errors(form, exc)
        return _render_pair(request, _pair_context(request, access, pair, queue, edit_form=form, edit_open=True),
                            status=400)
    notice = _("Saved. The change is in the history below.")
    queue = _queue(request, access)
    if request.htmx:
        return _render_pair(request, _pair_context(request, access, _pair_of(access, pk), queue, notice=notice))
    messages.success(request, notice)
    return redirect(_pair_url(access, pk, queue))

