from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate
from django.utils.module_loading import module_has_submodule
from django.utils.translation import gettext_lazy as _


def _install_schedule(sender, **kwargs):
    from domains.jobs import ensure_schedule

    ensure_schedule()


class DomainsConfig(AppConfig):
    name = "domains"
    verbose_name = _("Domains")

    def ready(self):
        # Job handlers register themselves when their app's tasks module is imported.
        from importlib import import_module

        for config in apps.get_app_configs():
            if module_has_submodule(config.module, "tasks") and config.name in {
                "domains", "datasets_app", "training_app", "inference_app"
            }:
                import_module(f"{config.name}.tasks")
        import_module("domains.pipeline")  # the pipeline job and its steps
        post_migrate.connect(_install_schedule, sender=self)

        from domains import stages
        from domains.models import Document

        stages.fill("documents", count=lambda d: Document.objects.for_domain(d).count(), url_name="document-list")

        from training_app.models import ModelVersion, TrainingRun

        stages.fill("training", count=lambda d: TrainingRun.objects.for_domain(d).count(), url_name="training-list")
        stages.fill("models", count=lambda d: ModelVersion.objects.for_domain(d).count(), url_name="model-list")
