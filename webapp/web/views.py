"""Browser pages: submit form, live request page, gallery. Validation is the API's serializer."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from webapp.api import tokens as api_tokens
from webapp.api.gallery import (
    GalleryFilter,
    InvalidFilter,
    delete_requests,
    neighbours,
    owned_rows,
    parse_filter,
    set_favourite,
)
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
    recent = owned_rows(request.user)[:RECENT_ROWS]
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
            "demo": demo_model_facts(),
        },
        status=status_code,
    )


def demo_model_facts() -> dict | None:
    """What the form tells users about the trained demo model (the words it knows, example prompts), from the
    marker file `build_demo_model` writes beside it; None when another model is served."""
    try:
        marker = json.loads(settings.T2I_DEMO_MARKER.read_text())
    except (OSError, ValueError):
        return None
    return {"words": marker.get("words", []), "examples": marker.get("example_prompts", [])[:6]}


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
        source = owned_rows(request.user).filter(pk=request.GET.get("from", "")).first()
    except ValidationError:  # not a UUID
        source = None
    if source is None:
        return {}
    return {name: str(getattr(source, name)) for name in RERUN_FIELDS}


@login_required
def request_detail(request, pk):
    row = get_object_or_404(owned_rows(request.user), pk=pk)
    rerun = {name: getattr(row, name) for name in RERUN_FIELDS}
    # ← → walk the gallery as it was filtered when this page was opened from it (the query string carries it).
    wanted = lenient_filter(request.GET, default_status="")
    newer, older = neighbours(request.user, row, wanted)
    query = urlencode(wanted.as_query())
    return render(
        request,
        "web/request_detail.html",
        {
            "row": row,
            "rerun": rerun,
            "vary": {k: v for k, v in rerun.items() if k != "seed"},
            "newer": newer,
            "older": older,
            "walk_query": f"?{query}" if query else "",
        },
    )


def back_to(request, fallback: str) -> str:
    """The form's `next` if it is a page of this site, else `fallback`."""
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return fallback
    return target


@login_required
@require_POST
def request_cancel(request, pk):
    """The page's and the recent list's Cancel button (queued or running; the API's rule). Back to `next`."""
    row = get_object_or_404(owned_rows(request.user), pk=pk)
    transitions.cancel(row.id)
    return redirect(back_to(request, row.get_absolute_url()))


@login_required
@require_POST
def request_favourite(request, pk):
    """Star or unstar (`favourite` = 1 or 0) one of your requests; back to `next`."""
    row = get_object_or_404(owned_rows(request.user), pk=pk)
    set_favourite(request.user, row.pk, request.POST.get("favourite") == "1")
    return redirect(back_to(request, row.get_absolute_url()))


@login_required
@require_POST
def gallery_delete(request):
    """Delete the requests ticked in the gallery (or the one a request page's Delete button names): your own
    only; anyone else's id is ignored. See webapp/api/gallery.py for what deleting erases."""
    deleted = delete_requests(request.user, request.POST.getlist("ids"))
    messages.success(request, f"Deleted {deleted} request{'s' if deleted != 1 else ''}.")
    return redirect(back_to(request, reverse("gallery")))


def lenient_filter(params, default_status: str) -> GalleryFilter:
    """The filter a page's query string asks for; a malformed one shows everything instead of an error."""
    try:
        return parse_filter(params, default_status)
    except InvalidFilter:
        return GalleryFilter(status=default_status)


@login_required
def gallery(request):
    """Your images, newest first: search the prompts, filter by status, day and star; tick to delete."""
    error = ""
    try:
        wanted = parse_filter(request.GET, default_status=Status.SUCCEEDED)
    except InvalidFilter as exc:
        error, wanted = str(exc), GalleryFilter(status=Status.SUCCEEDED)
    rows = wanted.apply(owned_rows(request.user))
    page = Paginator(rows, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode(wanted.as_query() | ({"status": "any"} if not wanted.status else {}))
    return render(
        request,
        "web/gallery.html",
        {
            "page": page,
            "wanted": wanted,
            "error": error,
            "statuses": Status.values,
            "query": query,
            "here": request.get_full_path(),
        },
        status=400 if error else 200,
    )


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
