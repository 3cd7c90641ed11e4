"""Teacher pages: which LLMs the recipes may ask, and the keys they use.

Members see the teachers (never their keys); owners add, change and remove teachers and
store keys. A key's secret goes in once, encrypted by ``services.add_teacher_key``, and is
never rendered again: pages show its label, fingerprint and usage only.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from datasets_app import services
from datasets_app.forms import TeacherForm, TeacherKeyForm
from datasets_app.models import TeacherConfig, TeacherKey
from datasets_app.teaching import OFFLINE_LABEL
from domains import access as gate
from domains.models import Role


def _pk(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404("No such teacher") from None


def _teacher_of(access: gate.Access, pk) -> TeacherConfig:
    return get_object_or_404(TeacherConfig.objects.select_related("domain"), domain=access.domain, pk=_pk(pk))


def _list_page(request: HttpRequest, access: gate.Access, form: TeacherForm | None = None,
               status: int = 200) -> HttpResponse:
    teachers = TeacherConfig.objects.for_domain(access.domain).annotate(n_keys=Count("keys")).order_by("name")
    context = {
        "access": access,
        "domain": access.domain,
        "teachers": teachers,
        "default_teacher": services.default_teacher(access.domain),
        "offline_label": OFFLINE_LABEL,
        "form": form or (TeacherForm(domain=access.domain) if access.is_owner else None),
        "section": "teachers",
    }
    return render(request, "datasets/teacher_list.html", context, status=status)


@login_required
@never_cache
@require_http_methods(["GET"])
def teacher_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The domain's teachers; owners also get the form to add one."""
    access = gate.for_request(request, slug)
    return _list_page(request, access)


def _save(form: TeacherForm, access: gate.Access, user) -> TeacherConfig:
    with transaction.atomic():
        teacher = form.save(commit=False)
        teacher.domain = access.domain
        if teacher.pk is None:
            teacher.created_by = user
        teacher.save()
        if form.cleaned_data.get("is_default"):
            services.set_default_teacher(teacher, domain=access.domain)
    return teacher


@login_required
@require_POST
def teacher_create(request: HttpRequest, slug: str) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    form = TeacherForm(request.POST, domain=access.domain)
    if not form.is_valid():
        return _list_page(request, access, form)
    teacher = _save(form, access, request.user)
    messages.success(request, _("Teacher “%(name)s” added. Store its API keys below.") % {"name": teacher.name})
    return redirect("teacher-edit", access.domain.slug, teacher.pk)


def _edit_page(request: HttpRequest, access: gate.Access, teacher: TeacherConfig, form: TeacherForm | None = None,
               key_form: TeacherKeyForm | None = None) -> HttpResponse:
    context = {
        "access": access,
        "domain": access.domain,
        "teacher": teacher,
        "form": form or TeacherForm(instance=teacher, domain=access.domain),
        "key_form": key_form or TeacherKeyForm(),
        "keys": teacher.keys.select_related("created_by"),
        "section": "teachers",
    }
    return render(request, "datasets/teacher_edit.html", context)


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def teacher_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Owners change a teacher's settings and manage its keys."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    teacher = _teacher_of(access, pk)
    if request.method == "POST":
        form = TeacherForm(request.POST, instance=teacher, domain=access.domain)
        if form.is_valid():
            teacher = _save(form, access, request.user)
            messages.success(request, _("Teacher “%(name)s” saved.") % {"name": teacher.name})
            return redirect("teacher-edit", access.domain.slug, teacher.pk)
        teacher.refresh_from_db()  # the failed form must not leak into the page's other parts
        return _edit_page(request, access, teacher, form=form)
    return _edit_page(request, access, teacher)


@login_required
@require_POST
def teacher_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    teacher = _teacher_of(access, pk)
    name = teacher.name
    teacher.delete()
    messages.success(request, _("Teacher “%(name)s” and its keys deleted. Recipes without a teacher use the "
                                "built-in offline teacher.") % {"name": name})
    return redirect("teacher-list", access.domain.slug)


@login_required
@require_POST
def teacher_key_add(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Store one API key of a teacher, encrypted; the page shows its fingerprint, never the key."""
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    teacher = _teacher_of(access, pk)
    form = TeacherKeyForm(request.POST)
    if form.is_valid():
        try:
            key = services.add_teacher_key(teacher=teacher, label=form.cleaned_data["label"],
                                           secret=form.cleaned_data["secret"], by=request.user)
        except ValidationError as exc:
            form.add_error("secret", exc)
        else:
            messages.success(request, _("Key “%(label)s” (#%(fingerprint)s) stored.")
                             % {"label": key.label, "fingerprint": key.fingerprint})
            return redirect("teacher-edit", access.domain.slug, teacher.pk)
    return _edit_page(request, access, teacher, key_form=form)  # a password input never renders the key


@login_required
@require_POST
def teacher_key_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = gate.for_request(request, slug, min_role=Role.OWNER)
    key = get_object_or_404(TeacherKey.objects.select_related("teacher"), teacher__domain=access.domain, pk=_pk(pk))
    teacher = key.teacher
    key.delete()
    messages.success(request, _("Key “%(label)s” (#%(fingerprint)s) deleted.")
                     % {"label": key.label, "fingerprint": key.fingerprint})
    return redirect("teacher-edit", access.domain.slug, teacher.pk)
