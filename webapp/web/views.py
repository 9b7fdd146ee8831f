"""Browser pages: submit form, live request page, gallery. Validation is the API's serializer."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from webapp.api import tokens as api_tokens
from webapp.api.serializers import GenerationCreateSerializer
from webapp.ledger.models import GenerationRequest, Priority, ServingConfig, Status
from webapp.ledger.publishing import BrokerUnavailable
from webapp.serving.probing import NearDuplicateLimit
from webapp.serving.submission import InFlightCapReached, Overloaded, Submission, submit

GALLERY_PAGE_SIZE = 24


@login_required
@require_http_methods(["GET", "POST"])
def home(request):
    config = ServingConfig.current()
    errors: dict = {}
    limited = overloaded = False
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
            except NearDuplicateLimit as exc:  # the probing limit: 429, as the API answers
                errors, limited = {"form": [str(exc)]}, True
            except Overloaded as exc:  # admission control: 503, as the API answers
                errors, overloaded = {"form": [str(exc)]}, True
            except BrokerUnavailable:
                errors = {
                    "form": ["The queue is unavailable right now; nothing was stored. Try again in a few seconds."]
                }
        else:
            errors = {k: [str(m) for m in v] for k, v in form.errors.items()}
    recent = GenerationRequest.objects.filter(owner=request.user)[:5]
    status_code = 429 if limited else 503 if overloaded else 400 if errors else 200
    return render(
        request,
        "web/home.html",
        {
            "config": config,
            "errors": errors,
            "values": values,
            "recent": recent,
            "priorities": Priority.choices,
            "status_code": status_code,
        },
        status=status_code,
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


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    """Your API tokens: create one with an expiry (its secret is shown on this response only) or revoke one."""
    new_secret, error = None, ""
    if request.method == "POST":
        if "revoke" in request.POST:
            if not api_tokens.revoke_token(request.user, request.POST["revoke"]):
                error = "You have no token with this id."
            else:
                return redirect("tokens")
        else:
            days = request.POST.get("expires_in_days") or api_tokens.default_days()
            form = api_tokens.TokenCreateSerializer(data={"expires_in_days": days})
            if form.is_valid():
                _, new_secret = api_tokens.create_token(request.user, form.validated_data["expires_in_days"])
            else:
                error = " ".join(str(m) for m in form.errors["expires_in_days"])
    response = render(
        request,
        "web/tokens.html",
        {
            "tokens": api_tokens.live_tokens(request.user),
            "new_secret": new_secret,
            "error": error,
            "max_days": api_tokens.max_days(),
            "default_days": api_tokens.default_days(),
        },
        status=400 if error else 200,
    )
    if new_secret:
        response["Cache-Control"] = "no-store"  # the secret must not stay in a cache
    return response
