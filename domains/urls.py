"""Browser URLs: every page of a domain lives under /d/<slug>/."""
from django.urls import path

urlpatterns = []
