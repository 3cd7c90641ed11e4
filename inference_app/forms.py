"""Forms of the retrieval page; they only parse input, the rules live in ``inference_app.services``."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from inference_app.models import EMBEDDED_ENCODER
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
