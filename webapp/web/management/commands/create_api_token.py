from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.api.tokens import create_token


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print its secret (the only time it is shown: tokens are "
        "stored hashed). Owners can also create, list and revoke tokens at /tokens/ and /api/v1/tokens/."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--days",
            type=int,
            default=settings.T2I_TOKEN_DEFAULT_DAYS,
            help="expires after this many days (default: T2I_TOKEN_DEFAULT_DAYS); 0: never",
        )

    def handle(self, *args, username: str, days: int, **kw):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        if days < 0:
            raise CommandError("--days must be 0 (never expires) or more")
        _, secret = create_token(user, days or None)
        self.stdout.write(secret)
