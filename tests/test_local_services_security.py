"""The embedded PostgreSQL and Redis (`make run`, `make test`) refuse a connection without their secret,
stay on 127.0.0.1, keep their secrets in 0600 files, and a data directory made before passwords
existed (trust auth) is locked down on its next start without losing its data."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis as redis_py
from redis.exceptions import AuthenticationError, ResponseError

from webapp.stack import run as stack_run
from webapp.stack.services import PG_HBA, Postgres, free_port, port_open

pytestmark = pytest.mark.slow


def assert_postgres_locked(port: int, password: str, database: str = "postgres") -> None:
    for kwargs in ({}, {"password": "wrong-" + password}):
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database, connect_timeout=5, **kwargs)
        assert "password" in str(refused.value)  # "no password supplied" / "password authentication failed"
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname=database, connect_timeout=5
    ) as conn:
        method = conn.execute("SHOW password_encryption").fetchone()[0]
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()[0]
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    assert method == "scram-sha-256" and stored.startswith("SCRAM-SHA-256$") and password not in stored
    assert listen == "127.0.0.1"


def assert_redis_locked(port: int, password: str) -> None:
    with pytest.raises(AuthenticationError):  # NOAUTH Authentication required
        redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=None).ping()
    with pytest.raises((AuthenticationError, ResponseError)):  # WRONGPASS
        redis_py.Redis(host="127.0.0.1", port=port, password="wrong-" + password, socket_timeout=5, retry=None).ping()
    client = redis_py.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
    assert client.ping() and client.config_get("bind")["bind"] == "127.0.0.1"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_test_stack_refuses_connections_without_the_secret(embedded_services):
    pg, redis = embedded_services["postgres"], embedded_services["redis"]
    assert pg.password == os.environ["T2I_TEST_PG_PASSWORD"] and pg.password in os.environ["DATABASE_URL"]
    assert_postgres_locked(pg.port, pg.password)
    assert_redis_locked(redis.port, redis.password)
    assert (pg.data_dir / "pg_hba.conf").read_text() == PG_HBA and mode(pg.data_dir) == 0o700
    assert mode(redis.data_dir / "redis.conf") == 0o600 and redis.password not in " ".join(redis.proc.args)


def test_redis_url_from_settings_authenticates(embedded_services):
    from django.conf import settings

    assert redis_py.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5).ping()


def _make_legacy_cluster(data_dir: Path, port: int) -> None:
    """A cluster as the code before passwords left it: trust auth everywhere, the role without a
    password, and some data in it."""
    pg = Postgres(data_dir, port, fast_unsafe=True, shared_buffers="32MB")
    pg.start()
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('made before passwords')")
            conn.execute("ALTER ROLE postgres PASSWORD NULL")
    finally:
        pg.stop()
    trust = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    pg._run_as_user(["sh", "-c", 'cat > "$1"', "sh", str(pg.data_dir / "pg_hba.conf")], input=trust, cwd="/")


def test_a_stack_started_like_make_run_is_locked_and_upgrades_an_old_data_dir(monkeypatch):
    # Under the test run's folder (0755), so PostgreSQL's service user reaches it when we are root.
    base = Path(tempfile.mkdtemp(prefix="make-run-", dir=os.environ["T2I_TEST_RUN_DIR"]))
    base.chmod(0o755)
    data_dir = base / "data"
    pg_port, redis_port = free_port(), free_port()
    _make_legacy_cluster(data_dir / "pg", pg_port)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FLOWER_BASIC_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("T2I_DATA_DIR", str(data_dir))
    monkeypatch.setenv("T2I_PG_PORT", str(pg_port))
    monkeypatch.setenv("T2I_REDIS_PORT", str(redis_port))

    urls = []
    for _start in range(2):  # the second start reuses the secrets kept in the data dir
        stack = stack_run.Stack(stack_run.parse_args([]))
        try:
            stack.start_services()
            env = stack.env
            pg_password = (data_dir / "pg-password.txt").read_text().strip()
            redis_password = (data_dir / "redis-password.txt").read_text().strip()
            assert_postgres_locked(pg_port, pg_password, "t2i")
            assert_redis_locked(redis_port, redis_password)
            # Children get password-bearing URLs and the generated SECRET_KEY through their environment.
            with psycopg.connect(env["DATABASE_URL"]) as conn:
                assert conn.execute("SELECT note FROM kept").fetchone() == ("made before passwords",)
            assert redis_py.Redis.from_url(env["REDIS_URL"]).ping()
            secret_key = (data_dir / "secret-key.txt").read_text().strip()
            assert len(secret_key) >= 50 and env["SECRET_KEY"] == secret_key
            assert stack.flower_auth().startswith("admin:")
            pg = stack.services[0]
            assert (pg.data_dir / "pg_hba.conf").read_text() == PG_HBA and "trust" not in PG_HBA.split("# TCP")[1]
            urls.append((env["DATABASE_URL"], env["REDIS_URL"], env["SECRET_KEY"]))
        finally:
            stack.stop()
        assert not port_open(pg_port) and not port_open(redis_port)
    assert urls[0] == urls[1]
    for name in ("pg-password.txt", "redis-password.txt", "secret-key.txt", "flower-login.txt"):
        assert mode(data_dir / name) == 0o600, name
