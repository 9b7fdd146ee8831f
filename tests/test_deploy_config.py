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
    assert int(services["web"]["environment"]["T2I_WORKERS"]) == len(gpu)


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
    for name, svc in compose()["services"].items():
        for var in svc.get("environment") or {}:
            if name in ("db",):
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
        # ${VAR:?message} → the .env value, as compose substitutes it
        env[name] = re.sub(r"\$\{(\w+)(?::?\?[^}]*)?\}", lambda m: env[m.group(1)], str(value))
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
