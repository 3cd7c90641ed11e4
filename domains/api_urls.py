"""REST API under /api/."""
from django.urls import path

urlpatterns = []
