import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken


def _write_secret(path, text: str) -> None:
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def demo_token(user, token_file) -> str:
    """The demo user's API token secret. Tokens are stored hashed, so the secret is kept in
    `token_file` (mode 0600); a new token replaces one whose file is missing or that was revoked or expired."""
    if token_file.exists():
        secret = token_file.read_text().strip()
        alive = Q(expiry__isnull=True) | Q(expiry__gt=timezone.now())
        if secret and AuthToken.objects.filter(alive, user=user, digest=hash_token(secret)).exists():
            return secret
    _, secret = AuthToken.objects.create(user=user, expiry=None)  # local demo: no expiry; revoke at /tokens/
    _write_secret(token_file, secret + "\n")
    return secret


class Command(BaseCommand):
    help = (
        "Create the local demo user (a superuser, for local use only) once, and print its "
        "login and API token. The password is kept in T2I_DATA_DIR/demo-login.txt, the token "
        "in T2I_DATA_DIR/demo-token.txt (both mode 0600; a revoked token is replaced)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")

    def handle(self, *args, username: str, **kw):
        secret_file = settings.DATA_DIR / "demo-login.txt"
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None or not secret_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(username, f"{username}@example.invalid", password)
            else:
                user.set_password(password)
                user.save()
            _write_secret(secret_file, f"{username}\n{password}\n")
        password = secret_file.read_text().split("\n")[1]
        token = demo_token(user, settings.DATA_DIR / "demo-token.txt")
        self.stdout.write(f"login: {username}  password: {password}\nAPI token: {token}")
