from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


def _chunks_changed(sender, document, chunk_ids, **kwargs):
    """New or removed chunks: the index is stale, and is rebuilt when the domain has one."""
    from inference_app.services import refresh_if_built

    refresh_if_built(document.domain_id, reason=f"chunks of {document.filename} changed")


def _active_model_changed(sender, domain_id, kind, version, **kwargs):
    """A new active embedding model re-embeds the chunks: the dense index belongs to one model.
    A new active LLM: this process lets go of the models it loaded for chat, so the memory of
    the version that stopped serving is freed (the next question loads the new one)."""
    if kind != "embedding":
        from inference_app.engine.generation import unload_generators

        unload_generators()
        return
    from inference_app.services import refresh_if_built

    refresh_if_built(domain_id, reason=f"embedding model v{version.number} promoted or demoted", build_anyway=True)


class InferenceConfig(AppConfig):
    name = "inference_app"
    verbose_name = _("Inference")

    def ready(self):
        from domains.signals import chunks_added, chunks_removed
        from training_app.signals import active_model_changed

        from domains import stages
        from inference_app.models import Conversation

        stages.fill("chat", count=lambda d: Conversation.objects.for_domain(d).count(), url_name="chat")
        chunks_added.connect(_chunks_changed, dispatch_uid="retrieval-chunks-added")
        chunks_removed.connect(_chunks_changed, dispatch_uid="retrieval-chunks-removed")
        active_model_changed.connect(_active_model_changed, dispatch_uid="retrieval-active-model")
