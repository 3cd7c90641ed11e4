"""Browser views: server-rendered pages with htmx fragments for live job progress.

Every view of a domain starts at the access gate (``domains.access``): outsiders get 404,
members whose role is too low get 403. Workflows are the service functions'; a view only
parses the form, calls the service and shows the outcome.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from domains import access as gate
from domains import services, stages
from domains.forms import ApiKeyForm, DomainForm, MemberAddForm, MemberRoleForm, SelfcheckForm, apply_errors
from domains.jobs import cancel_job
from domains.models import ApiKey, Domain, Job, Membership, Role

JOBS_PER_PAGE = 50


# Home ---------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """My domains, and a form to create one (its creator becomes the owner)."""
    form = DomainForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            domain = services.create_domain(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, _("Domain “%(name)s” created. You are its owner.") % {"name": domain.name})
            return redirect(domain)
    my_role = Membership.objects.filter(domain=OuterRef("pk"), user=request.user).values("role")[:1]
    active_jobs = (
        Job.objects.filter(domain=OuterRef("pk")).active().order_by().values("domain").annotate(n=Count("pk")).values("n")
    )
    domains = list(
        Domain.objects.for_user(request.user).annotate(
            my_role=Subquery(my_role),
            active_jobs=Coalesce(Subquery(active_jobs, output_field=IntegerField()), Value(0)),
        )
    )
    for domain in domains:
        domain.role = Role(domain.my_role)
    return render(request, "domains/home.html", {"domains": domains, "form": form})


# Dashboard ----------------------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The pipeline at a glance, and the work running now."""
    from domains import pipeline

    access = gate.for_request(request, slug)
    domain = access.domain
    latest = pipeline.latest_pipeline(domain)
    context = {
        "access": access,
        "domain": domain,
        "cards": stages.cards_for(domain),
        "active_jobs": Job.objects.for_domain(domain).active().select_related("domain"),
        "job_count": Job.objects.for_domain(domain).count(),
        "section": "dashboard",
        "pipeline_job": latest,
        "pipeline_stages": pipeline.outcome_of(latest)["stages"] if latest else [],
    }
    return render(request, "domains/dashboard.html", context)


@login_required
@require_POST
def pipeline_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Run the whole pipeline (or resume the last one) as a job; its stages show on the dashboard."""
    from domains import pipeline

    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    try:
        if request.POST.get("resume"):
            pipeline.resume_pipeline(domain=access.domain, by=request.user, may_promote=access.is_owner)
        else:
            # Experts run everything but the promote stages, which change what the domain serves.
            stages = None if access.is_owner else [s for s in pipeline.STAGE_NAMES if s not in pipeline.PROMOTING]
            pipeline.start_pipeline(domain=access.domain, by=request.user, stages=stages,
                                    options={"demo": bool(request.POST.get("demo"))}, may_promote=access.is_owner)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("The pipeline is queued; a worker runs its stages one after the other."))
    return redirect("domain-dashboard", access.domain.slug)


# Jobs ---------------------------------------------------------------------------------------


def _job_fragment(request: HttpRequest, template: str, context: dict, job: Job) -> HttpResponse:
    """A polled fragment; once the job is finished, status 286 tells htmx to stop polling."""
    if job.is_finished:
        response = HttpResponseStopPolling(render_to_string(template, context, request))
    else:
        response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _job_of(access: gate.Access, pk) -> Job:
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such job") from None
    return get_object_or_404(Job.objects.select_related("domain", "created_by"), domain=access.domain, pk=pk)


def _job_list_page(request: HttpRequest, access: gate.Access, form: SelfcheckForm | None = None) -> HttpResponse:
    domain = access.domain
    page = Paginator(
        Job.objects.for_domain(domain).select_related("domain", "created_by"), JOBS_PER_PAGE
    ).get_page(request.GET.get("page"))
    context = {
        "access": access,
        "domain": domain,
        "page": page,
        "jobs": page.object_list,
        "form": form or (SelfcheckForm() if access.can_write else None),
        "section": "jobs",
    }
    response = render(request, "domains/job_list.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_GET
def job_list(request: HttpRequest, slug: str) -> HttpResponse:
    """All jobs of the domain. With htmx and ``?job=<id>``: that job's row only (its progress poll)."""
    access = gate.for_request(request, slug)
    if request.htmx and "job" in request.GET:
        job = _job_of(access, request.GET["job"])
        return _job_fragment(request, "domains/job_list.html#job-row", {"job": job, "domain": access.domain}, job)
    return _job_list_page(request, access)


@login_required
@require_GET
def job_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One job: status, progress, message, error and log tail. With htmx: the status panel only."""
    access = gate.for_request(request, slug)
    job = _job_of(access, pk)
    context = {"access": access, "domain": access.domain, "job": job, "section": "jobs"}
    if request.htmx:
        return _job_fragment(request, "domains/job_detail.html#job-panel", context, job)
    response = render(request, "domains/job_detail.html", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Cancel a queued job now, or ask a running one to stop at its next check."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    job = _job_of(access, pk)
    finished_before = job.is_finished
    if not finished_before:
        job = cancel_job(job)
    if request.htmx:  # the panel shows the new state itself
        context = {"access": access, "domain": access.domain, "job": job, "section": "jobs"}
        return render(request, "domains/job_detail.html#job-panel", context)
    if finished_before:
        messages.info(request, _("This job had already finished."))
    elif job.status == Job.Status.CANCELLED:
        messages.success(request, _("Job cancelled."))
    else:
        messages.info(request, _("Asked the worker to stop; the job ends at its next check."))
    return redirect(job)


@login_required
@require_POST
def job_selfcheck(request: HttpRequest, slug: str) -> HttpResponse:
    """Queue a worker check: N short steps that show the queue, progress and cancel working."""
    access = gate.for_request(request, slug, min_role=Role.EXPERT)
    form = SelfcheckForm(request.POST)
    if form.is_valid():
        try:
            services.start_selfcheck(domain=access.domain, created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, _("Worker check queued. Its progress shows below."))
            return redirect("job-list", access.domain.slug)
    return _job_list_page(request, access, form)


# Members ------------------------------------------------------------------------------------


def _member_page(request: HttpRequest, access: gate.Access, form: MemberAddForm | None = None) -> HttpResponse:
    members = Membership.objects.for_domain(access.domain).select_related("user")
    rows = [(m, MemberRoleForm(initial={"role": m.role}, prefix=f"m{m.pk}")) for m in members]
    context = {
        "access": access,
        "domain": access.domain,
        "rows": rows,
        "form": form or MemberAddForm(),
        "roles": Role.choices,
        "section": "members",
    }
    return render(request, "domains/member_list.html", context)


@login_required
@require_GET
def member_list(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    return _member_page(request, access)


@login_required
@require_POST
def member_add(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            membership = services.add_member(
                domain=access.domain, user_identifier=form.cleaned_data["user"], role=form.cleaned_data["role"],
                by=request.user,
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(
                request,
                _("%(user)s added as %(role)s.")
                % {"user": membership.user.username, "role": Role(membership.role).label},
            )
            return redirect("member-list", access.domain.slug)
    return _member_page(request, access, form)


def _membership_of(access: gate.Access, pk: int) -> Membership:
    return get_object_or_404(Membership.objects.select_related("user"), domain=access.domain, pk=pk)


@login_required
@require_POST
def member_role(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    membership = _membership_of(access, pk)
    form = MemberRoleForm(request.POST, prefix=f"m{membership.pk}")
    if not form.is_valid():
        messages.error(request, _("Choose one of the roles."))
    else:
        try:
            services.change_role(membership=membership, role=form.cleaned_data["role"], by=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request,
                _("%(user)s is now %(role)s.") % {"user": membership.user.username, "role": Role(membership.role).label},
            )
            if membership.user == request.user and membership.role != Role.OWNER:
                return redirect(access.domain)  # no longer allowed on this page
    return redirect("member-list", access.domain.slug)


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    membership = _membership_of(access, pk)
    try:
        services.remove_member(membership=membership, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("member-list", access.domain.slug)
    messages.success(
        request,
        _("%(user)s no longer has access to %(domain)s.")
        % {"user": membership.user.username, "domain": access.domain.name},
    )
    if membership.user == request.user:
        return redirect("home")
    return redirect("member-list", access.domain.slug)


# API keys -----------------------------------------------------------------------------------


def _key_page(request: HttpRequest, access: gate.Access, form: ApiKeyForm | None = None, **extra) -> HttpResponse:
    context = {
        "access": access,
        "domain": access.domain,
        "keys": ApiKey.objects.for_domain(access.domain).select_related("created_by"),
        "form": form or ApiKeyForm(),
        "section": "keys",
        **extra,
    }
    return render(request, "domains/key_list.html", context)


@login_required
@require_GET
def key_list(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    return _key_page(request, access)


@never_cache
@login_required
@require_POST
def key_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Issue a key and show its secret on this response only; it is stored hashed."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            key, secret = services.issue_api_key(domain=access.domain, created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            return _key_page(request, access, ApiKeyForm(), new_key=key, new_secret=secret)
    return _key_page(request, access, form)


@login_required
@require_POST
def key_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    key = get_object_or_404(ApiKey, domain=access.domain, pk=pk)
    if key.is_active:
        services.revoke_api_key(key=key, by=request.user)
        messages.success(request, _("Key “%(name)s” revoked; it no longer works.") % {"name": key.name})
    return redirect("key-list", access.domain.slug)


@login_required
@require_GET
def audit_log(request: HttpRequest, slug: str) -> HttpResponse:
    """Owners read who did what in the domain: reviews, promotions, exports, keys, members, the chat deployment."""
    from django.core.paginator import Paginator

    from domains import audit
    from domains.models import AuditEvent

    access = gate.for_request(request, slug, min_role=Role.OWNER)
    events = AuditEvent.objects.for_domain(access.domain).select_related("actor")
    action = request.GET.get("action", "")
    if action in audit.ACTIONS:
        events = events.filter(action=action)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "domains/audit_log.html", {
        "access": access, "domain": access.domain, "section": "audit", "page": page,
        "actions": sorted(audit.ACTIONS), "action": action})
