"""Forms of the review queue: the filters (query parameters) and the pair's edit and review posts."""
from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from datasets_app.models import QADataset, QAPair
from domains.models import Document, Domain, Membership, Role

# The query parameters that define a filtered set of pairs; kept on every link and post of the queue.
FILTER_KEYS = ("dataset", "document", "status", "source", "min_score", "reviewer", "assigned", "q")


def reviewers_of(domain: Domain):
    """Members who may review (experts and owners), by name."""
    ids = Membership.objects.filter(domain=domain, role__in=[Role.EXPERT, Role.OWNER]).values("user_id")
    return get_user_model().objects.filter(pk__in=ids).order_by("username")


def _user_choices(users) -> list[tuple[str, str]]:
    return [(str(u.pk), u.get_username()) for u in users]


class ReviewFilterForm(forms.Form):
    """The queue's filters. Invalid values are reported beside their field and otherwise ignored."""

    dataset = forms.TypedChoiceField(label=_("Dataset"), required=False, coerce=int, empty_value=None)
    document = forms.TypedChoiceField(label=_("Document"), required=False, coerce=int, empty_value=None)
    status = forms.ChoiceField(label=_("Status"), required=False)
    source = forms.ChoiceField(label=_("Source"), required=False)
    min_score = forms.FloatField(label=_("Quality score at least"), required=False, min_value=0,
                                 widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "0.5"}))
    reviewer = forms.TypedChoiceField(label=_("Reviewed by"), required=False, coerce=int, empty_value=None)
    assigned = forms.ChoiceField(label=_("Assigned to"), required=False)
    q = forms.CharField(label=_("Text"), required=False, max_length=200,
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("Words in the question or answer")}))

    def __init__(self, data, *, domain: Domain, user):
        super().__init__(data)
        everyone = ("", _("All"))
        self.fields["dataset"].choices = [everyone] + [
            (str(d.pk), d.name) for d in QADataset.objects.for_domain(domain).order_by("name")
        ]
        documents = (Document.objects.for_domain(domain).filter(qa_pairs__isnull=False).distinct()
                     .order_by("filename").values_list("pk", "filename"))
        self.fields["document"].choices = [everyone] + [(str(pk), name) for pk, name in documents]
        self.fields["status"].choices = [everyone] + list(QAPair.Status.choices)
        self.fields["source"].choices = [everyone] + list(QAPair.Source.choices)
        members = get_user_model().objects.filter(memberships__domain=domain).order_by("username")
        self.fields["reviewer"].choices = [("", _("Anyone"))] + _user_choices(members)
        self.fields["assigned"].choices = [
            ("", _("Anyone")), ("me", _("Me")), ("none", _("No one")),
        ] + _user_choices(reviewers_of(domain))

    def values(self) -> dict:
        """The valid, non-empty filter values."""
        self.is_valid()  # fills cleaned_data with the fields that are valid
        cleaned = getattr(self, "cleaned_data", {})
        return {k: cleaned[k] for k in FILTER_KEYS if k in cleaned and cleaned[k] not in (None, "")}

    @property
    def active(self) -> bool:
        return bool(self.values())


class PairEditForm(forms.Form):
    """An expert's edit of question / answer / held-out, against the version they loaded."""

    question = forms.CharField(label=_("Question"), widget=forms.Textarea(attrs={"rows": 3}))
    answer = forms.CharField(label=_("Answer"), widget=forms.Textarea(attrs={"rows": 5}))
    held_out = forms.BooleanField(label=_("Held-out test pair (never used for training)"), required=False)
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)


class ReviewActionForm(forms.Form):
    """A review decision; question and answer are optional edits applied in the same step."""

    action = forms.ChoiceField(choices=[("approve", _("Approve")), ("reject", _("Reject")),
                                        ("needs_edit", _("Needs edit")), ("reopen", _("Reopen"))])
    reason = forms.CharField(label=_("Reason"), required=False, max_length=300)
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    question = forms.CharField(required=False, strip=True)
    answer = forms.CharField(required=False, strip=True)


class _PairIds(forms.TypedMultipleChoiceField):
    """Ticked pair ids: any integers here; the view limits them to the domain's pairs of the filter."""

    def valid_value(self, value) -> bool:
        return str(value).isdigit()


class AssignForm(forms.Form):
    """Give the ticked pairs, or all pairs of the filter, to a reviewer (or to no one)."""

    to = forms.ChoiceField(label=_("Assign to"), required=False)
    scope = forms.ChoiceField(choices=[("selected", _("Ticked pairs")), ("all", _("All matching pairs"))],
                              initial="selected")
    ids = _PairIds(required=False, coerce=int)

    def __init__(self, *args, domain: Domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["to"].choices = [("", _("Choose a reviewer")), ("none", _("No one (unassign)"))] + _user_choices(
            reviewers_of(domain)
        )

    def clean_to(self):
        value = self.cleaned_data["to"]
        if not value:
            raise forms.ValidationError(_("Choose who reviews these pairs."))
        return value

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("scope") == "selected" and not cleaned.get("ids"):
            raise forms.ValidationError(_("Tick the pairs to assign, or assign all matching pairs."))
        return cleaned
