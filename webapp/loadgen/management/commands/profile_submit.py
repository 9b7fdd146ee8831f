"""`manage.py profile_submit`: where a submit's and a status GET's CPU goes (webapp/loadgen/submit_profile.py).

    # next to a running stack (make run, or bench_submit's): its data directory finds the services
    T2I_DATA_DIR=.data T2I_WORKERS=4 T2I_ENGINE=emulated python manage.py profile_submit --requests 300

Runs the API in this process against that stack's database and Redis, as the demo user (its token from the
data directory), with torch sized as a web process is. Writes rows and sends messages like any client.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from webapp.loadgen.submit_profile import profile


class Command(BaseCommand):
    help = "The CPU split of POST /api/v1/generations/ and of a status GET, in-process, without a profiler."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=300, help="POSTs, then as many GETs")
        parser.add_argument("--threads", type=int, default=1, help="threads POSTing at once (GETs: one)")
        parser.add_argument("--token", help="an API token (default: the data directory's demo-token.txt)")

    def handle(self, *args, **opts):
        token = opts["token"] or (Path(settings.DATA_DIR) / "demo-token.txt").read_text().strip()
        self.stdout.write("\n".join(profile(token, opts["requests"], opts["threads"])))
