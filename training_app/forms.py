"""Browser form of the training pages. It only parses input; the rules live in
``training_app.services.start_training`` and the engine's ``TrainConfig`` validation."""
from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from datasets_app.models import DatasetVersion
from domains.forms import apply_errors
from training_app.engine.config import PRESETS, TrainConfig
from training_app.models import ModelExport, TrainingRun
from training_app.services import EMBEDDED_BASE

DEFAULTS = TrainConfig()
# The config fields a person edits on the form, in the order shown.
EDITABLE = ("epochs", "learning_rate", "lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length")
STARTABLE_KINDS = tuple(TrainingRun.Kind)
PRESET_LABELS = {
    "high_precision": _("High precision (finance, law, medicine)"),
    "customer_service": _("Customer service"),
    "creative": _("Creative"),
}


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.dataset.name} v{obj.number} · {obj.short_hash}"


class TrainingStartForm(forms.Form):
    """Start a run: what to train on, from which base, and the few settings people change."""

    dataset_version = VersionChoiceField(
        label=_("Dataset version"), queryset=DatasetVersion.objects.none(), required=False,
        empty_label=_("(none: continual pre-training reads the documents)"),
        help_text=_("A frozen version; the run records its content hash."),
    )
    kind = forms.ChoiceField(label=_("Kind"), initial=TrainingRun.Kind.SFT,
                             choices=[(k.value, k.label) for k in STARTABLE_KINDS])
    base_model = forms.CharField(
        label=_("Base model"), max_length=500, initial=EMBEDDED_BASE,
        help_text=_("embedded:gemma3-270m (built in), a local model folder, a .gguf file or a Hugging Face id."),
    )
    preset = forms.ChoiceField(
        label=_("Preset"), required=False, initial="",
        choices=[("", _("None (plain defaults)")), *[(name, PRESET_LABELS.get(name, name)) for name in PRESETS]],
        help_text=_("With a preset, the settings below that are left at their default take the preset's value."),
    )
    name = forms.CharField(label=_("Name"), max_length=200, required=False)
    objective = forms.ChoiceField(
        label=_("Embedding objective"), required=False, initial="mnrl",
        choices=[("mnrl", _("In-batch negatives (MNRL)")), ("triplet", _("Triplets with hard negatives")),
                 ("cosent", _("CoSENT on scored pairs")), ("cosine", _("Cosine loss on scored pairs")),
                 ("tsdae", _("TSDAE on the documents (no pairs)")), ("augsbert", _("Augmented SBERT"))],
        help_text=_("Embedding runs only. The base model for them is embedded:all-minilm-l6-v2 unless you name "
                    "another; settings left at their LLM default take the embedding defaults."),
    )
    strategy = forms.ChoiceField(
        label=_("Embedding strategy"), required=False, initial="full",
        choices=[("full", _("Full fine-tuning")), ("bitfit", _("BitFit (bias terms only)")),
                 ("prefix", _("Prefix tokens only"))],
    )
    epochs = forms.IntegerField(label=_("Epochs"), min_value=1, max_value=1000, initial=DEFAULTS.epochs)
    learning_rate = forms.FloatField(label=_("Learning rate"), min_value=0, max_value=1,
                                     initial=DEFAULTS.learning_rate,
                                     widget=forms.NumberInput(attrs={"step": "any"}))
    lora_r = forms.IntegerField(label=_("LoRA rank (r)"), min_value=1, max_value=1024, initial=DEFAULTS.lora_r)
    lora_alpha = forms.IntegerField(label=_("LoRA alpha"), min_value=1, max_value=4096,
                                    initial=DEFAULTS.lora_alpha)
    batch_size = forms.IntegerField(label=_("Batch size"), min_value=1, max_value=4096,
                                    initial=DEFAULTS.batch_size)
    grad_accum = forms.IntegerField(label=_("Gradient accumulation"), min_value=1, max_value=4096,
                                    initial=DEFAULTS.grad_accum,
                                    help_text=_("Effective batch = batch size × gradient accumulation."))
    max_length = forms.IntegerField(label=_("Max length (tokens)"), min_value=8, max_value=131072,
                                    initial=DEFAULTS.max_length)

    def __init__(self, *args, domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = domain
        versions = DatasetVersion.objects.for_domain(domain).select_related("dataset").order_by("-created_at", "-id")
        self.fields["dataset_version"].queryset = versions
        latest = versions.first()
        if latest is not None and not self.is_bound:
            self.initial.setdefault("dataset_version", latest.pk)

    def main_fields(self):
        return [self[name] for name in self.fields if name not in EDITABLE]

    def setting_fields(self):
        return [self[name] for name in EDITABLE]

    def overrides(self) -> dict:
        """The edited settings that differ from the defaults (the rest come from the preset, if any)."""
        values = {}
        for name in EDITABLE:
            value = self.cleaned_data.get(name)
            if value is None:
                continue
            default = getattr(DEFAULTS, name)
            value = float(value) if isinstance(default, float) else int(value)
            if value != default:
                values[name] = value
        if self.cleaned_data.get("kind") == TrainingRun.Kind.EMBEDDING:
            for name in ("objective", "strategy"):
                if self.cleaned_data.get(name):
                    values[name] = self.cleaned_data[name]
        return values

    def show_service_error(self, exc: ValidationError) -> None:
        """A service error beside its field; the engine's ``config`` errors ("epochs: …") beside theirs."""
        if hasattr(exc, "error_dict") and "config" in exc.error_dict:
            rest = {k: v for k, v in exc.error_dict.items() if k != "config"}
            for error in exc.error_dict["config"]:
                for message in error.messages:
                    name, _sep, text = message.partition(":")
                    if text and name.strip() in self.fields:
                        self.add_error(name.strip(), text.strip())
                    else:
                        self.add_error(None, message)
            if not rest:
                return
            exc = ValidationError(rest)
        apply_errors(self, exc)


class ModelExportForm(forms.Form):
    """Which formats to export a model version in; the rules live in ``services.start_export``."""

    merged = forms.BooleanField(label=_("Merged safetensors"), required=False, initial=True,
                                help_text=_("The adapter merged into its base: a Hugging Face model folder."))
    gguf_outtype = forms.ChoiceField(label=_("GGUF"), required=False, initial=ModelExport.Outtype.F16,
                                     choices=ModelExport.Outtype.choices,
                                     help_text=_("For llama.cpp and Ollama; q8_0 is half the size of f16."))
    quantize = forms.ChoiceField(label=_("Quantize"), required=False, initial=ModelExport.Quantize.Q4_K_M,
                                 choices=ModelExport.Quantize.choices,
                                 help_text=_("Q4_K_M: about a quarter of f16, for small machines."))
    modelfile = forms.BooleanField(label=_("Ollama Modelfile"), required=False, initial=True,
                                   help_text=_("With the chat template the model was trained with."))


class PromotionPolicyForm(forms.Form):
    """The domain's promotion gate: the configuration compared, the largest drop allowed per metric (blank: the
    metric is not gated), and the largest loss of general ability."""

    configuration = forms.ChoiceField(label=_("Configuration compared"))
    probe_max_drop = forms.FloatField(label=_("General ability may fall by at most"), min_value=0.0, max_value=1.0)

    def __init__(self, *args, policy=None, **kwargs):
        from training_app.models import GATE_METRICS, EvaluationRun

        initial = {}
        if policy is not None:
            initial = {"configuration": policy.configuration, "probe_max_drop": policy.probe_max_drop,
                       **{f"drop_{m}": v for m, v in (policy.metrics or {}).items()}}
        super().__init__(*args, initial=initial, **kwargs)
        C = EvaluationRun.Configuration
        self.fields["configuration"].choices = [(c.value, c.label) for c in (C.MODEL_RAG, C.MODEL)]
        self.metric_names = list(GATE_METRICS)
        for metric in self.metric_names:
            self.fields[f"drop_{metric}"] = forms.FloatField(label=metric, required=False, min_value=0.0,
                                                             max_value=1.0)

    def metric_fields(self):
        return [self[f"drop_{m}"] for m in self.metric_names]

    def clean(self):
        data = super().clean()
        metrics = {m: data[f"drop_{m}"] for m in self.metric_names if data.get(f"drop_{m}") is not None}
        if not metrics and not self.errors:
            raise ValidationError(_("Gate at least one metric."))
        data["metrics"] = metrics
        return data
