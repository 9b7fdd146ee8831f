"""docker-compose.yml cannot be run here (no Docker engine); check it parses and agrees with
the settings and the worker/queue conventions."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

from webapp.ledger.queues import gpu_queue, worker_argv

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def substitute(value: object, env: dict[str, str] | None = None) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:?message} from `env`; ${VAR:-default} when unset."""
    env = env or {}

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        return env[name] if name in env else (arg if op == ":-" else env[name])

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, str(value))


def test_each_gpu_worker_consumes_its_own_queue_with_a_device():
    services = compose()["services"]
    gpu = {name: s for name, s in services.items() if name.startswith("worker-gpu-")}
    assert len(gpu) >= 1
    for svc in gpu.values():
        index = svc["environment"]["T2I_WORKER_INDEX"]
        command = svc["command"]
        # The one worker command line, minus the interpreter: `celery -A webapp worker …`.
        assert command[0] == "celery" and command[1:] == worker_argv(gpu_queue(int(index)), f"gpu{index}@%h")[3:]
        assert command[command.index("-c") + 1] == "1"
        assert command[command.index("--prefetch-multiplier") + 1] == "1"
        devices = svc["deploy"]["resources"]["reservations"]["devices"][0]
        assert devices["device_ids"] == [index] and "gpu" in devices["capabilities"]
    # By default, one slot per local GPU service; remote workers raise T2I_WORKERS in .env.
    assert int(substitute(services["web"]["environment"]["T2I_WORKERS"])) == len(gpu)


def test_exactly_one_beat_and_flower_behind_auth():
    services = compose()["services"]
    beats = [n for n, s in services.items() if "beat" in " ".join(map(str, s.get("command", [])))]
    assert beats == ["beat"]
    assert "--basic-auth" in " ".join(services["flower"]["command"])


def test_redis_is_append_only_and_services_have_health_checks():
    services = compose()["services"]
    assert "--appendonly" in services["redis"]["command"]
    for name in ("db", "redis", "web", "worker-gpu-0", "flower"):
        assert "healthcheck" in services[name], name


def test_every_environment_variable_is_a_setting():
    settings_src = (ROOT / "webapp" / "settings.py").read_text()
    known = set(re.findall(r'env_(?:int|float|bool|list|choice)\("([A-Z0-9_]+)"', settings_src))
    known |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', settings_src))
    known |= {"T2I_WORKER_INDEX"}  # read by workers/runtime.py
    known |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # read by boto3 (django-storages' S3 backend)
    for name, svc in compose()["services"].items():
        for var in svc.get("environment") or {}:
            if name in ("db", "redis", "minio", "minio-bucket"):  # the images' own variables
                continue
            assert var in known, f"{name}: {var} is not read by the settings"


def compose_settings_env() -> dict[str, str]:
    """The environment compose gives the app containers: .env.example (placeholders replaced, as the
    operator must; the settings refuse the example SECRET_KEY) and the x-app `environment` block."""
    env: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = secrets.token_urlsafe(50) if value.startswith("change-me") else value.strip()
    for name, value in compose()["x-app"]["environment"].items():
        env[name] = substitute(value, env)  # ${VAR:?message} → the .env value, as compose substitutes it
    return env


def test_check_deploy_is_clean_with_the_compose_settings():
    """`manage.py check --deploy` with compose's settings: no warning at all (HSTS, SSL redirect behind
    X-Forwarded-Proto, secure cookies, DEBUG off, a strong SECRET_KEY, HTTPS CSRF origins)."""
    env = compose_settings_env()
    assert env["DEBUG"] == "0" and env["T2I_HTTPS"] == "1"
    assert all(origin.startswith("https://") for origin in env["CSRF_TRUSTED_ORIGINS"].split(","))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced).", result.stdout
    assert "WARNING" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_settings_refuse_the_example_secret_key_without_debug():
    env = {**compose_settings_env(), "SECRET_KEY": "change-me-to-the-output-of-python-secrets-token-urlsafe-50"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0 and "placeholder from .env.example" in result.stderr


def test_web_processes_use_the_gunicorn_settings_with_json_errors():
    """Errors gunicorn answers itself (oversized headers: 431) are JSON too (webapp/gunicorn_conf.py)."""
    assert "python:webapp.gunicorn_conf" in compose()["services"]["web"]["command"]
    assert "python:webapp.gunicorn_conf" in (ROOT / "Dockerfile").read_text()
    assert "python:webapp.gunicorn_conf" in (ROOT / "webapp" / "stack" / "run.py").read_text()


def test_images_and_latents_go_to_the_minio_bucket():
    """The app keeps images and latents in MinIO (docs/storage.md), whose bucket exists before any app starts."""
    services = compose()["services"]
    env = compose_settings_env()
    assert env["T2I_STORAGE"] == "s3" and env["T2I_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]  # from .env (S3_ACCESS_KEY, S3_SECRET_KEY)
    minio = services["minio"]
    assert "healthcheck" in minio and minio["image"].startswith("minio/minio:RELEASE.")
    assert minio["environment"]["MINIO_ROOT_PASSWORD"] == compose()["x-app"]["environment"]["AWS_SECRET_ACCESS_KEY"]
    bucket = services["minio-bucket"]
    assert f"mb --ignore-existing t2i/{env['T2I_S3_BUCKET']}" in " ".join(bucket["entrypoint"])
    assert compose()["x-app"]["depends_on"]["minio-bucket"] == {"condition": "service_completed_successfully"}
    assert "media" not in compose()["volumes"]  # no volume shared for images: they are in the bucket


def test_services_remote_workers_reach_listen_on_the_published_address_and_redis_has_a_password():
    services = compose()["services"]
    for name, port in (("db", 5432), ("redis", 6379), ("minio", 9000)):
        assert f"${{T2I_PUBLISH_ADDR:-127.0.0.1}}:{port}:{port}" in services[name]["ports"], name
    assert "--requirepass" in services["redis"]["command"]
    assert compose_settings_env()["REDIS_URL"].startswith("redis://:")  # the password in the URL


def test_remote_worker_profile_needs_only_the_shared_services():
    """worker-remote runs on another machine: not started by a plain `up`, depending on no local service,
    sharing no volume but its own model copy, consuming gpu.<T2I_WORKER_INDEX> with the one worker command."""
    remote = compose()["services"]["worker-remote"]
    assert remote["profiles"] == ["remote-worker"] and "depends_on" not in remote
    assert remote["volumes"] == ["models:/models"]
    assert remote["environment"]["T2I_STORAGE"] == "s3" and remote["env_file"] == ".env"
    shell, flag, line = remote["command"]
    assert (shell, flag) == ("sh", "-c") and line.startswith("exec ")
    argv = re.sub(r"\$\$\{T2I_WORKER_INDEX(?::\?[^}]*)?\}", "2", line).split()[1:]
    assert argv[0] == "celery" and argv[1:] == worker_argv(gpu_queue(2), "gpu2@%h")[3:]
    assert (
        "healthcheck" in remote and "gpu" in remote["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"]
    )
