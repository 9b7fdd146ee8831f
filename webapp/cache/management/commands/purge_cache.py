"""Remove approximate-cache entries (rows and latent files) by provenance.

    python manage.py purge_cache --owner alice                       # everything alice's generations made
    python manage.py purge_cache --tenant g:3 --before 2026-01-01    # a tenant's entries older than a date
    python manage.py purge_cache --prompt-contains "secret project" --dry-run
    python manage.py purge_cache --all

Criteria combine (AND). Without any criterion the command refuses unless ``--all`` is given. The rows go
through ``cache_store.purge`` (the writers' advisory lock); latent files are removed once that commits.
Output names counts, never prompt text.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from webapp.cache import store as cache_store


def parse_before(text: str) -> dt.datetime:
    """An ISO date (midnight, server time zone) or date-time; naive values are in the server's time zone."""
    when = parse_datetime(text)
    if when is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--before: {text!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)")
        when = dt.datetime.combine(day, dt.time())
    return timezone.make_aware(when) if timezone.is_naive(when) else when


class Command(BaseCommand):
    help = "Remove approximate-cache entries (rows and latent files) by creator, tenant, age or prompt text."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--owner", help="Username (or numeric id) whose generations made the entries.")
        parser.add_argument("--tenant", help="Tenant: g:<group id>, u:<user id>, public (warm_cache) or '' (unknown).")
        parser.add_argument("--before", help="Entries created before this date or date-time (ISO 8601).")
        parser.add_argument("--prompt-contains", help="Entries whose prompt contains this text (case-insensitive).")
        parser.add_argument("--all", action="store_true", help="Every entry (needed when no criterion is given).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; remove nothing.")

    def handle(self, *args, **opts) -> None:
        owner, tenant, before, prompt_contains = opts["owner"], opts["tenant"], opts["before"], opts["prompt_contains"]
        if owner is None and tenant is None and before is None and not prompt_contains and not opts["all"]:
            raise CommandError("Name at least one of --owner, --tenant, --before, --prompt-contains, or --all.")
        creator_id = None
        if owner is not None:
            users = get_user_model().objects
            user = users.filter(username=owner).first() or (
                users.filter(pk=int(owner)).first() if owner.isdigit() else None
            )
            if user is None:
                raise CommandError(f"No user {owner!r}.")
            creator_id = user.pk
        rows = cache_store.entries_matching(
            creator_id=creator_id,
            tenant=tenant,
            before=parse_before(before) if before else None,
            prompt_contains=prompt_contains,
        )
        ids = list(rows.values_list("pk", flat=True))
        if opts["dry_run"]:
            self.stdout.write(f"Would purge {len(ids)} cache entries (dry run; nothing removed).")
            return
        entries, files = cache_store.purge(ids) if ids else (0, 0)
        self.stdout.write(self.style.SUCCESS(f"Purged {entries} cache entries and {files} latent files."))
