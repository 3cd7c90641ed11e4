"""Browser forms. They only parse input; the rules live in ``domains.services``.

Field names match the keys of the ``ValidationError`` dicts that the services raise, so
``apply_errors`` can put a service's message beside the field it is about.
"""
from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from domains.models import ApiKey, Domain, Role
from domains.services import SELFCHECK_MAX_STEP_SECONDS, SELFCHECK_MAX_STEPS


def apply_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: beside its field when the form has one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


class DomainForm(forms.Form):
    slug = forms.SlugField(
        label=_("Slug"), max_length=60, help_text=_("Short name used in URLs, e.g. finance-reimbursement.")
    )
    name = forms.CharField(label=_("Name"), max_length=200)
    description = forms.CharField(
        label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    language = forms.ChoiceField(label=_("Language"), choices=Domain.Language.choices, initial=Domain.Language.ZH)
    model_hub = forms.ChoiceField(label=_("Model hub"), required=False,
                                  choices=Domain._meta.get_field("model_hub").choices,
                                  help_text=_("Where bare model ids come from (ModelScope for teams in mainland China)."))


class MemberAddForm(forms.Form):
    user = forms.CharField(
        label=_("Username or e-mail"), max_length=254, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=100, help_text=_("The system that will use the key, e.g. helpdesk-bot.")
    )
    scope = forms.ChoiceField(label=_("Scope"), choices=ApiKey.Scope.choices, initial=ApiKey.Scope.READ)


class SelfcheckForm(forms.Form):
    steps = forms.IntegerField(label=_("Steps"), min_value=1, max_value=SELFCHECK_MAX_STEPS, initial=10)
    step_seconds = forms.FloatField(
        label=_("Seconds per step"), min_value=0, max_value=SELFCHECK_MAX_STEP_SECONDS, initial=0.5,
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )
