from rest_framework.routers import DefaultRouter

from .tokens import TokenViewSet
from .views import GenerationViewSet

router = DefaultRouter(trailing_slash=True)
router.register("generations", GenerationViewSet, basename="api-generation")
router.register("tokens", TokenViewSet, basename="api-token")

urlpatterns = router.urls
