from rest_framework.routers import DefaultRouter

from .views import GenerationViewSet

router = DefaultRouter(trailing_slash=True)
router.register("generations", GenerationViewSet, basename="api-generation")

urlpatterns = router.urls
