"""Dataset pages: datasets with their recipes, versions and downloads, teachers."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from datasets_app.models import QADataset
from domains import access as gate


@login_required
@require_GET
def dataset_list(request, slug):
    access = gate.for_request(request, slug)
    datasets = QADataset.objects.for_domain(access.domain)
    return render(request, "datasets/dataset_list.html", {"access": access, "domain": access.domain,
                                                          "datasets": datasets})
