"""Browser forms of the documents pages. They only parse input; the rules live in ``domains.services``."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from domains.models import Domain


def _limits(field_name: str) -> tuple[int | None, int | None]:
    """The model's own min/max validators, so the form and the database agree on one range."""
    low = high = None
    for validator in Domain._meta.get_field(field_name).validators:
        if validator.code == "min_value":
            low = validator.limit_value
        elif validator.code == "max_value":
            high = validator.limit_value
    return low, high


class ChunkingForm(forms.Form):
    """A domain's chunk size and overlap; field names match ``services.update_chunking``'s errors."""

    chunk_target_chars = forms.IntegerField(
        label=_("Chunk size (characters)"),
        min_value=_limits("chunk_target_chars")[0],
        max_value=_limits("chunk_target_chars")[1],
        help_text=_("About how long each chunk is. Shorter chunks give more precise questions and search hits."),
    )
    chunk_overlap_chars = forms.IntegerField(
        label=_("Overlap (characters)"),
        min_value=0,
        max_value=_limits("chunk_overlap_chars")[1],
        help_text=_("Text repeated at the start of the next chunk, so a sentence on the border is not lost."),
    )

    def clean(self):
        data = super().clean()
        size, overlap = data.get("chunk_target_chars"), data.get("chunk_overlap_chars")
        if size is not None and overlap is not None and overlap >= size:
            self.add_error("chunk_overlap_chars", _("The overlap must be smaller than the chunk size."))
        return data
