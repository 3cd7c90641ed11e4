"""Forms of the retrieval page; they only parse input, the rules live in ``inference_app.services``."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from inference_app.models import EMBEDDED_ENCODER, Deployment
from inference_app.services import MAX_CANDIDATES, MAX_K, MAX_QUERY_CHARS


class HitTestForm(forms.Form):
    q = forms.CharField(label=_("Query"), max_length=MAX_QUERY_CHARS,
                        widget=forms.TextInput(attrs={"type": "search", "autocomplete": "off",
                                                      "placeholder": _("A question a user would ask")}))
    k = forms.IntegerField(label=_("Top k"), min_value=1, max_value=MAX_K, initial=5, required=False)


class IndexSettingsForm(forms.Form):
    encoder = forms.CharField(label=_("Embedding model"), max_length=500, initial=EMBEDDED_ENCODER,
                              help_text=_("embedded:all-minilm-l6-v2 (built in), a local folder or a Hugging Face id. "
                                          "An active embedding model version of the domain takes its place."))
    dense_enabled = forms.BooleanField(label=_("Dense retrieval"), required=False, initial=True,
                                       help_text=_("Off: BM25 only, no embedding model is loaded."))
    reranker = forms.CharField(label=_("Reranker"), max_length=500, required=False,
                               help_text=_("Optional: a local cross-encoder folder that re-scores the top 20 hybrid "
                                           "hits (an Augmented SBERT run leaves one in its run folder)."))


class ComparisonForm(forms.Form):
    candidates = forms.CharField(
        label=_("Embedding models"), widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One per line: embedded:all-minilm-l6-v2, a local folder, a Hugging Face id, or model:<n> for an "
                    "embedding model version of this domain (at most %(n)d).") % {"n": MAX_CANDIDATES},
    )

    def clean_candidates(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["candidates"].splitlines() if line.strip()]


# Chat ---------------------------------------------------------------------------------------


class AskForm(forms.Form):
    question = forms.CharField(label=_("Question"), max_length=4000,
                               widget=forms.Textarea(attrs={"rows": 2, "placeholder": _("Ask about the documents…"),
                                                            "autocomplete": "off"}))
    mode = forms.ChoiceField(label=_("Mode"), required=False, choices=[("", _("default"))] + list(Deployment.Mode.choices))
    conversation = forms.IntegerField(required=False, widget=forms.HiddenInput)


class FeedbackForm(forms.Form):
    rating = forms.TypedChoiceField(coerce=int, choices=[(1, "👍"), (-1, "👎"), (0, "–")], initial=0)
    correction = forms.CharField(label=_("Correct answer"), required=False, max_length=8000,
                                 widget=forms.Textarea(attrs={"rows": 2}),
                                 help_text=_("Becomes a pending QA pair in the review queue."))


class DeploymentForm(forms.ModelForm):
    """The deployment with its generation settings as fields; the remote key is write-only."""

    temperature = forms.FloatField(label=_("Temperature"), min_value=0, max_value=5, initial=0.7)
    top_p = forms.FloatField(label=_("Top p"), min_value=0.01, max_value=1, initial=0.9)
    top_k = forms.IntegerField(label=_("Top k"), min_value=0, max_value=1000, initial=50)
    repetition_penalty = forms.FloatField(label=_("Repetition penalty"), min_value=0.01, max_value=10, initial=1.2)
    max_new_tokens = forms.IntegerField(label=_("Max new tokens"), min_value=1, max_value=8192, initial=256)
    remote_key = forms.CharField(label=_("Remote API key"), required=False, widget=forms.PasswordInput,
                                 help_text=_("Stored encrypted, never shown; leave empty to keep the current one."))

    GENERATION = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")

    class Meta:
        model = Deployment
        fields = ["mode", "backend", "k", "threshold", "remote_url", "remote_model", "public", "rate_limit"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from inference_app.engine.generation import GenerationSettings

        try:
            current = GenerationSettings.from_dict(self.instance.generation).to_dict()
        except ValueError:
            current = GenerationSettings().to_dict()
        for name in self.GENERATION:
            self.fields[name].initial = current[name]
        self.fields["k"].widget.attrs.update(min=1, max=20)
        self.fields["threshold"].widget.attrs.update(min=0, max=1, step=0.05)

    def clean_k(self):
        k = self.cleaned_data["k"]
        if not 1 <= k <= 20:
            raise forms.ValidationError(_("Between 1 and 20 passages."))
        return k

    def clean_threshold(self):
        t = self.cleaned_data["threshold"]
        if not 0 <= t <= 1:
            raise forms.ValidationError(_("A confidence between 0 and 1."))
        return t

    def clean(self):
        data = super().clean()
        if data.get("backend") == "remote" and not (data.get("remote_url") and data.get("remote_model")):
            raise forms.ValidationError(_("A remote backend needs the server's base URL and model name."))
        return data

    def save(self, commit: bool = True):
        from datasets_app import crypto
        from inference_app import serving

        deployment = super().save(commit=False)
        deployment.generation = {name: self.cleaned_data[name] for name in self.GENERATION}
        if self.cleaned_data.get("remote_key"):
            deployment.remote_key_encrypted = crypto.encrypt(self.cleaned_data["remote_key"])
        if deployment.public and not deployment.public_token:
            deployment.public_token = serving.new_public_token()
        if commit:
            deployment.save()
        return deployment
