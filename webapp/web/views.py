"""Browser pages: submit form, live request page, gallery. Validation is the API's serializer."""

from __future__ import annotations

import secrets

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from webapp.api import tokens as api_tokens
from webapp.api.serializers import GenerationCreateSerializer
from webapp.ledger import transitions
from webapp.ledger.models import SEED_MAX, GenerationRequest, Priority, ServingConfig, Status
from webapp.ledger.publishing import BrokerUnavailable
from webapp.serving.probing import NearDuplicateLimit
from webapp.serving.submission import InFlightCapReached, Overloaded, Submission, submit

GALLERY_PAGE_SIZE = 24
RECENT_ROWS = 8
MAX_IMAGES_PER_SUBMIT = 8
# What "re-run", "vary" (all but the seed) and "edit" carry over from a request into a new one.
RERUN_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "steps", "guidance_scale", "priority")


@login_required
@require_http_methods(["GET", "POST"])
def home(request):
    config = ServingConfig.current()
    errors: dict = {}
    limited = overloaded = False
    values = request.POST if request.method == "POST" else form_values_from(request)
    if request.method == "POST":
        data = {k: v for k, v in request.POST.items() if v != "" and k != "csrfmiddlewaretoken"}
        form = GenerationCreateSerializer(data=data)
        if form.is_valid():
            made: list[GenerationRequest] = []
            try:
                for fields in submissions(form.validated_data, images_wanted(request.POST.get("count"))):
                    made.append(submit(request.user, Submission(**fields))[0])
                return redirect(made[0] if len(made) == 1 else "home")
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
            if made:
                errors["form"].append(f"{len(made)} of the images asked for were submitted before this.")
        else:
            errors = {k: [str(m) for m in v] for k, v in form.errors.items()}
    recent = GenerationRequest.objects.filter(owner=request.user)[:RECENT_ROWS]
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


def images_wanted(raw: str | None) -> int:
    """The form's "images" field: 1 to MAX_IMAGES_PER_SUBMIT (anything else: 1)."""
    try:
        return min(MAX_IMAGES_PER_SUBMIT, max(1, int(raw or 1)))
    except ValueError:
        return 1


def submissions(fields: dict, count: int) -> list[dict]:
    """`count` requests of the same parameters with consecutive seeds (from the given seed, or a random
    one), as n separate requests: each is scheduled, cached and shown on its own."""
    if count == 1:
        return [fields]
    first = fields["seed"] if fields.get("seed") is not None else secrets.randbelow(SEED_MAX + 1)
    return [dict(fields, seed=(first + i) % (SEED_MAX + 1)) for i in range(count)]


def form_values_from(request) -> dict:
    """ "Edit" on a request page opens the form pre-filled with that request's parameters (`?from=<id>`, the
    user's own requests only; anything else gives the empty form)."""
    try:
        source = GenerationRequest.objects.filter(owner=request.user, pk=request.GET.get("from", "")).first()
    except ValidationError:  # not a UUID
        source = None
    if source is None:
        return {}
    return {name: str(getattr(source, name)) for name in RERUN_FIELDS}


@login_required
def request_detail(request, pk):
    row = get_object_or_404(GenerationRequest, pk=pk, owner=request.user)
    rerun = {name: getattr(row, name) for name in RERUN_FIELDS}
    return render(
        request,
        "web/request_detail.html",
        {"row": row, "rerun": rerun, "vary": {k: v for k, v in rerun.items() if k != "seed"}},
    )


@login_required
@require_POST
def request_cancel(request, pk):
    """The page's and the recent list's Cancel button (queued or running; the API's rule). Back to `next`."""
    row = get_object_or_404(GenerationRequest, pk=pk, owner=request.user)
    transitions.cancel(row.id)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = row.get_absolute_url()
    return redirect(target)


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
