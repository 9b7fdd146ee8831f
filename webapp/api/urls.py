from django.urls import path
from rest_framework.routers import DefaultRouter

from .event_stream import GenerationEventsView
from .prompt_token_count import PromptTokenCountView
from .tokens import TokenViewSet
from .views import GenerationViewSet

router = DefaultRouter(trailing_slash=True)
router.register("generations", GenerationViewSet, basename="api-generation")
router.register("tokens", TokenViewSet, basename="api-token")

urlpatterns = [
    path("generations/<uuid:pk>/events/", GenerationEventsView.as_view(), name="api-generation-events"),
    path("prompt-tokens/", PromptTokenCountView.as_view(), name="api-prompt-tokens"),
    *router.urls,
]
