"""The Prometheus endpoint, included from webapp/urls.py at `metrics` (no trailing slash):

path("metrics", include("webapp.dashboard.metrics_urls")),
"""

from django.urls import path

from .prometheus import metrics_view

urlpatterns = [path("", metrics_view, name="metrics")]
