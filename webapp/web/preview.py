"""The live preview of a running request: a small PNG of its current latent (issue 12, item 1).

The GPU worker writes it to Redis about once a second (workers/progress.py: the engine's linear latent → RGB
approximation, one pixel per latent cell, no VAE); the request page shows it under the progress bar and
reloads it as the steps advance (static/web/request.js). Owner-only, like the request page: someone else's
id is a 404, and so is a request that is not running or has no preview yet.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404

from webapp.api.gallery import owned_rows
from webapp.ledger.models import Status
from webapp.ledger.progress import read_preview


@login_required
def request_preview(request, pk) -> HttpResponse:
    row = get_object_or_404(owned_rows(request.user).only("id", "status"), pk=pk)
    png = read_preview(row.id) if row.status == Status.RUNNING else None
    if png is None:
        raise Http404("No preview: the request is not running, or no step has been previewed yet.")
    return HttpResponse(png, content_type="image/png", headers={"Cache-Control": "no-store"})
