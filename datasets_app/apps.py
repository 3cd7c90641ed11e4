from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


def _chunks_removed(sender, document, chunk_ids, **kwargs):
    """Reviewed pairs survive re-chunking (their chunk link is cleared); their dataset is marked stale."""
    from datasets_app.services import mark_stale

    mark_stale(domain_id=document.domain_id, chunk_ids=chunk_ids,
               reason=f"chunks of {document.filename} were replaced or removed")


class DatasetsConfig(AppConfig):
    name = "datasets_app"
    verbose_name = _("Datasets")

    def ready(self):
        from datasets_app.models import QAPair
        from domains import stages
        from domains.signals import chunks_removed

        chunks_removed.connect(_chunks_removed, dispatch_uid="datasets-chunks-removed")
        stages.fill("datasets", count=lambda d: QAPair.objects.for_domain(d).count(), url_name="dataset-list")
