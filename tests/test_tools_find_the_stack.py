"""Commands find a `make run` on non-default ports (issue 12, item 10): the stack writes the ports and URLs it
chose to <data dir>/run/connection.json (no secret in it), and manage.py, run by hand with none of
DATABASE_URL / REDIS_URL / SECRET_KEY / T2I_*_PORT set, reads that file and the 0600 secrets next to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from knox.crypto import hash_token

from webapp.stack import run as stack_run
from webapp.stack.connection_file import connection_path, read_connection
from webapp.stack.services import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# What a person's shell next to `make run` does not have: the stack's own variables.
STACK_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "T2I_PG_PORT", "T2I_REDIS_PORT", "T2I_WEB_PORT")


# Run inside `manage.py shell`: what the command found (token digests in its database, loadgen's default URL,
# Redis answering, the database port).
WHAT_SETTINGS_FOUND = """
import json
from django.conf import settings
from knox.models import AuthToken
from redis import Redis
from webapp.loadgen.management.commands.loadgen import Command
parser = Command().create_parser("manage.py", "loadgen")
print(json.dumps({
    "digests": list(AuthToken.objects.values_list("digest", flat=True)),
    "loadgen_url": parser.get_default("url"),
    "redis": Redis.from_url(settings.REDIS_URL).ping(),
    "pg_port": int(settings.DATABASES["default"]["PORT"]),
}))
"""


def manage(data_dir: Path, *argv: str, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    env.update(T2I_DATA_DIR=str(data_dir), **extra_env)
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def stack_on_other_ports(monkeypatch):
    """The embedded services as `make run` starts them, on free (non-default) ports, with its connection file."""
    base = Path(tempfile.mkdtemp(prefix="tools-", dir=os.environ["T2I_TEST_RUN_DIR"]))
    base.chmod(0o755)  # PostgreSQL's service user must reach it when we are root
    for name in STACK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("T2I_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("T2I_PG_PORT", str(free_port()))
    monkeypatch.setenv("T2I_REDIS_PORT", str(free_port()))
    args = stack_run.parse_args(["--port", str(free_port()), "--flower-port", str(free_port())])
    stack = stack_run.Stack(args)
    try:
        stack.start_services()
        stack.write_connection_file()
        yield stack
    finally:
        stack.stop()


def test_the_connection_file_names_ports_and_urls_and_no_secret(stack_on_other_ports):
    stack = stack_on_other_ports
    found = read_connection(stack.data_dir)
    args = stack.args
    assert found["web_url"] == f"http://127.0.0.1:{args.port}" and found["web_port"] == args.port
    assert found["flower_port"] == args.flower_port
    assert found["pg_port"] == int(os.environ["T2I_PG_PORT"]) and found["redis_port"] == int(
        os.environ["T2I_REDIS_PORT"]
    )
    text = connection_path(stack.data_dir).read_text()
    for secret in ("pg-password.txt", "redis-password.txt", "secret-key.txt"):
        assert (stack.data_dir / secret).read_text().strip() not in text


def test_manage_py_commands_work_without_the_stack_environment(stack_on_other_ports):
    data_dir = stack_on_other_ports.data_dir
    manage(data_dir, "migrate", "--noinput")
    manage(
        data_dir,
        "createsuperuser",
        "--noinput",
        "--username",
        "ops",
        "--email",
        "ops@x.invalid",
        DJANGO_SUPERUSER_PASSWORD="pw-ops-12345",
    )
    secret = manage(data_dir, "create_api_token", "ops").strip()
    answer = json.loads(manage(data_dir, "shell", "-c", WHAT_SETTINGS_FOUND).strip().splitlines()[-1])
    connection = read_connection(data_dir)
    assert hash_token(secret) in answer["digests"]  # the token was made in the stack's database
    assert answer["loadgen_url"] == connection["web_url"]
    assert answer["redis"] is True and answer["pg_port"] == connection["pg_port"]
