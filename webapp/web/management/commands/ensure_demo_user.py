import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Create the local demo user (a superuser, for local use only) once, and print its "
        "login and API token. The password is kept in T2I_DATA_DIR/demo-login.txt."
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
            settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
            secret_file.write_text(f"{username}\n{password}\n")
            secret_file.chmod(0o600)
        password = secret_file.read_text().split("\n")[1]
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(f"login: {username}  password: {password}\nAPI token: {token.key}")
