"""Dashboard URLs, included from webapp/urls.py at `dashboard/`:

path("dashboard/", include("webapp.dashboard.urls")),
path("metrics", include("webapp.dashboard.metrics_urls")),
"""

from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard, name="index"),
    path("data.json", views.data, name="data"),
    path("charts/<slug:name>.png", views.chart, name="chart"),
]
