"""Browser forms of the dataset and teacher pages. They only parse input; the rules live in
``datasets_app.services`` / ``versions`` and the models' ``clean``."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from datasets_app.models import QADataset, TeacherConfig
from datasets_app.services import IMPORT_FORMATS
from datasets_app.tasks import RECIPE_KINDS
from domains.jobs import kind_label
from domains.models import Document

OFFLINE_CHOICE = _("Built-in offline teacher (document structure, no model, no key)")


class DatasetForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100, help_text=_("e.g. travel-claims, faq-2025"))
    description = forms.CharField(label=_("Description"), required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    double_review = forms.BooleanField(label=_("Double review"), required=False,
                                       help_text=_("Approval needs two reviewers; their agreement is shown."))

    def __init__(self, *args, domain=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = domain

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError(_("Give the dataset a name."))
        if QADataset.objects.for_domain(self.domain).filter(name=name).exists():
            raise forms.ValidationError(_("This domain already has a dataset of that name."))
        return name


class TeacherChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        label = str(obj)
        return f"{label} · {_('default')}" if obj.is_default else label


class RecipeForm(forms.Form):
    """Start a recipe; the teacher list starts at the domain's default teacher."""

    recipe = forms.ChoiceField(label=_("Recipe"))
    teacher = TeacherChoiceField(label=_("Teacher"), queryset=TeacherConfig.objects.none(), required=False,
                                 empty_label=OFFLINE_CHOICE)
    per_chunk = forms.IntegerField(label=_("Questions per chunk"), min_value=1, max_value=20, initial=3,
                                   help_text=_("QA recipe"))
    variants = forms.IntegerField(label=_("Paraphrases per question"), min_value=1, max_value=10, initial=3,
                                  help_text=_("Paraphrase recipe"))
    documents = forms.ModelMultipleChoiceField(
        label=_("Documents"), queryset=Document.objects.none(), required=False,
        widget=forms.SelectMultiple(attrs={"size": 5}),
        help_text=_("Only chunks of these documents; choose none for all documents."),
    )

    def __init__(self, *args, domain, **kwargs):
        from datasets_app.services import default_teacher

        super().__init__(*args, **kwargs)
        self.fields["recipe"].choices = [(name, kind_label(kind)) for name, kind in RECIPE_KINDS.items()]
        self.fields["teacher"].queryset = TeacherConfig.objects.for_domain(domain).order_by("name")
        self.fields["documents"].queryset = (
            Document.objects.for_domain(domain).filter(status=Document.Status.READY).order_by("filename")
        )
        if not self.is_bound:
            default = default_teacher(domain)
            self.initial.setdefault("teacher", default.pk if default else None)


class AddPairForm(forms.Form):
    question = forms.CharField(label=_("Question"), widget=forms.Textarea(attrs={"rows": 2}))
    answer = forms.CharField(label=_("Answer"), widget=forms.Textarea(attrs={"rows": 3}))
    held_out = forms.BooleanField(label=_("Held-out test pair"), required=False,
                                  help_text=_("Never used for training; always in the test split."))
    approve = forms.BooleanField(label=_("Approve now"), required=False)


class ImportForm(forms.Form):
    file = forms.FileField(
        label=_("File"), allow_empty_file=True,
        help_text=_("CSV, TSV, JSONL or XLSX with question/answer columns (English or Chinese headers); "
                    "Alpaca JSON/JSONL (name ending .json or containing “alpaca”); ShareGPT JSONL "
                    "(name containing “sharegpt”). Rows already imported are skipped."),
    )
    format = forms.ChoiceField(label=_("Format"), initial="auto", required=False,
                               choices=lambda: list(IMPORT_FORMATS.items()))
    approve = forms.BooleanField(label=_("Approve the imported pairs at once"), required=False)

    def clean_format(self):
        return self.cleaned_data.get("format") or "auto"


class FreezeForm(forms.Form):
    note = forms.CharField(label=_("Note"), max_length=200, required=False,
                           help_text=_("What changed, e.g. “after the March review”."))
    seed = forms.IntegerField(label=_("Split seed"), min_value=0, initial=0,
                              help_text=_("The same data and seed always give the same split."))
    validation_percent = forms.FloatField(label=_("Validation %"), min_value=0, max_value=50, initial=5,
                                          widget=forms.NumberInput(attrs={"step": "0.5"}))


class TeacherForm(forms.ModelForm):
    """A teacher's settings; ``model.clean()`` errors (e.g. Gemini without a model) show on the form."""

    base_url = forms.URLField(
        label=TeacherConfig._meta.get_field("base_url").verbose_name, max_length=300, required=False,
        assume_scheme="https", help_text=TeacherConfig._meta.get_field("base_url").help_text,
    )

    class Meta:
        model = TeacherConfig
        fields = ["name", "provider", "model", "base_url", "model_path", "temperature", "concurrency", "rpm",
                  "max_output_tokens", "is_default"]
        widgets = {"temperature": forms.NumberInput(attrs={"step": "0.1"})}

    def __init__(self, *args, domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = domain
        self.instance.domain = domain

    def clean_name(self):
        name = self.cleaned_data["name"]
        clash = TeacherConfig.objects.for_domain(self.domain).filter(name=name)
        if self.instance.pk:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(_("This domain already has a teacher of that name."))
        return name


class TeacherKeyForm(forms.Form):
    label = forms.CharField(label=_("Label"), max_length=60, required=False,
                            help_text=_("Which account or project the key belongs to, e.g. team-a."))
    secret = forms.CharField(label=_("Key"), max_length=500, strip=True,
                             widget=forms.PasswordInput(attrs={"autocomplete": "off"}, render_value=False),
                             help_text=_("Stored encrypted; it is never shown again."))
