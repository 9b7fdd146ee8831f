"""Browser pages: submit form, live request page, gallery. Validation is the API's serializer."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from webapp.api.serializers import GenerationCreateSerializer
from webapp.ledger.models import GenerationRequest, Priority, ServingConfig, Status
from webapp.ledger.publishing import BrokerUnavailable
from webapp.serving.submission import InFlightCapReached, Submission, submit

GALLERY_PAGE_SIZE = 24


@login_required
@require_http_methods(["GET", "POST"])
def home(request):
    config = ServingConfig.current()
    errors: dict = {}
    values = request.POST if request.method == "POST" else {}
    if request.method == "POST":
        data = {k: v for k, v in request.POST.items() if v != "" and k != "csrfmiddlewaretoken"}
        form = GenerationCreateSerializer(data=data)
        if form.is_valid():
            try:
                row, _ = submit(request.user, Submission(**form.validated_data))
                return redirect(row)
            except InFlightCapReached as exc:
                errors = {"form": [str(exc)]}
            except BrokerUnavailable:
                errors = {
                    "form": ["The queue is unavailable right now; nothing was stored. Try again in a few seconds."]
                }
        else:
            errors = {k: [str(m) for m in v] for k, v in form.errors.items()}
    recent = GenerationRequest.objects.filter(owner=request.user)[:5]
    return render(
        request,
        "web/home.html",
        {
            "config": config,
            "errors": errors,
            "values": values,
            "recent": recent,
            "priorities": Priority.choices,
            "status_code": 400 if errors else 200,
        },
        status=400 if errors else 200,
    )


@login_required
def request_detail(request, pk):
    row = get_object_or_404(GenerationRequest, pk=pk, owner=request.user)
    return render(request, "web/request_detail.html", {"row": row})


@login_required
def gallery(request):
    rows = GenerationRequest.objects.filter(owner=request.user, status=Status.SUCCEEDED)
    page = Paginator(rows, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "web/gallery.html", {"page": page})
