"""docker-compose.yml cannot be run here (no Docker engine); check it parses and agrees with
the settings and the worker/queue conventions."""

from __future__ import annotations

import re
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
    known |= set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', settings_src))
    known |= {"T2I_WORKER_INDEX"}  # read by workers/runtime.py
    for name, svc in compose()["services"].items():
        for var in svc.get("environment") or {}:
            if name in ("db",):
                continue
            assert var in known, f"{name}: {var} is not read by the settings"
