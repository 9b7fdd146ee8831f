from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from webapp.dashboard import health
from webapp.web import views as web
from webapp.web.preview import request_preview

urlpatterns = [
    path("", web.home, name="home"),
    path("requests/<uuid:pk>/", web.request_detail, name="request-detail"),
    path("requests/<uuid:pk>/cancel/", web.request_cancel, name="request-cancel"),
    path("requests/<uuid:pk>/favourite/", web.request_favourite, name="request-favourite"),
    path("requests/<uuid:pk>/preview.png", request_preview, name="request-preview"),
    path("gallery/", web.gallery, name="gallery"),
    path("gallery/delete/", web.gallery_delete, name="gallery-delete"),
    path("tokens/", web.tokens, name="tokens"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The cache's admin pages moved with its models (workers → cache): old bookmarks still work.
    re_path(
        r"^admin/workers/(?P<rest>cache(?:entry|config|level)/.*)$",
        RedirectView.as_view(url="/admin/cache/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("webapp.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view loads Swagger UI's start-up code as a script file, not inline (CSP: no inline script).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("dashboard/", include("webapp.dashboard.urls")),
    path("metrics", include("webapp.dashboard.metrics_urls")),
    # Probes for compose and load balancers: public, and they say only which check failed.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]

# JSON under /api/, Django's small plain pages elsewhere; never a debug page (webapp/api/errors.py).
handler400 = "webapp.api.errors.handler400"
handler403 = "webapp.api.errors.handler403"
handler404 = "webapp.api.errors.handler404"
handler500 = "webapp.api.errors.handler500"
