"""The fence: imports follow the layers of DESIGN §3, and no package imports itself in a circle.

    core      scheduler/                      pure Python: imports nothing of the project
    domain    webapp/ledger → webapp/cache → webapp/serving   (each may import the ones to its left)
    faces     webapp/api, web, dashboard, loadgen, stack      → the domain and the core
    GPU       workers/                        → the domain and the core; never imported by webapp/
    engine    workers/engine, emulated_engine, tiny_model, image_fidelity, bench_resume: no Django

Module sources are read as text and parsed (nothing is imported), so the check is fast and sees lazy
imports inside functions too. A project import inside a function is allowed only where the table
`LAZY_PROJECT_IMPORTS` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scheduler", "webapp", "workers")
ENGINE_FILES = {
    "workers.engine",
    "workers.emulated_engine",
    "workers.tiny_model",
    "workers.image_fidelity",
    "workers.bench_resume",
    # The demo world and model (issue 15): numpy/PIL/torch only, so the build runs without Django.
    "workers.demo",
    "workers.demo.world",
    "workers.demo.prompt_stream",
    "workers.demo.scorer",
    "workers.demo.architecture",
    "workers.demo.training",
    "workers.demo.adherence",
    "workers.demo.build",
    "workers.demo.marker",
    "workers.demo.figures",
    "workers.demo.measure_quality",
    "workers.demo.live_scoring",
}
WIRING = {
    "webapp",
    "webapp.settings",
    "webapp.urls",
    "webapp.wsgi",
    "webapp.celery",
    "webapp.middleware",
    "webapp.singleton",
}
DOMAIN = ("webapp.ledger", "webapp.cache", "webapp.serving")  # in import order: left may not import right
FACES = ("webapp.api", "webapp.web", "webapp.dashboard", "webapp.loadgen", "webapp.stack")
# Leaf modules any layer may use: names on the wire, and the embedded services (no project imports).
SHARED_LEAVES = {"webapp.ledger.queues", "webapp.stack.services", "webapp.singleton", "webapp.celery"}
# The one face-to-face edge: the browser form validates with the API's serializer, so both faces
# accept exactly the same input.
FACE_EXCEPTIONS = {("webapp.web", "webapp.api")}
FRAMEWORKS = ("django", "rest_framework", "celery", "django_celery_beat", "pgvector.django")

# Project imports inside functions, and why they cannot be at the top.
LAZY_PROJECT_IMPORTS = {
    "webapp.serving.apps": "signals import models: only once the app registry is ready",
    "webapp.cache.bench_lookup": "starts its own PostgreSQL, then sets DATABASE_URL, then sets Django up",
    "webapp.dashboard.bench_render": "starts its own PostgreSQL and Redis, then sets their URLs, then sets Django up",
    "workers.bench_progress": "starts its own Redis, then sets REDIS_URL, then sets Django up",
    "webapp.wsgi": "the warm-up runs after Django is set up",
    "webapp.dashboard.views": "charts import matplotlib: only when a chart is asked for",
    "webapp.loadgen.collect": "plots import matplotlib: only when plots are written",
    "scheduler.simulate": "plots import matplotlib: only when plots are written",
    "workers.tasks": "the engine imports torch: only GPU workers pay for it, not the control worker",
    "workers.runtime": "the engines import torch and diffusers: loaded on first use",
}


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """Every project module (migrations aside) by dotted name, as source text."""
    out = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path.read_text()
    return out


def _is_package(name: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def imports_of(name: str, source: str, sources: dict[str, str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import in `source`. `from x import y`
    names the module x.y when that is a module, else x."""
    tree = ast.parse(source)
    package = name if _is_package(name, sources) else name.rpartition(".")[0]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(sub) for sub in ast.walk(node) if sub is not node}
    found = []
    for node in ast.walk(tree):
        lazy = id(node) in in_function
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.append((candidate if candidate in sources else base, node.lineno, lazy))
    return found


def _layer(module: str) -> str:
    if module.startswith("scheduler"):
        return "core"
    if module in ENGINE_FILES:
        return "engine"
    if module.startswith("workers"):
        return "gpu"
    if module in WIRING:
        return "wiring"
    for prefix in DOMAIN + FACES:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return "other"


def _allowed(src: str, dst: str) -> bool:
    s, d = _layer(src), _layer(dst)
    if dst == "webapp.stack.run" or src == "webapp.stack.services":
        return False  # the supervisor is started, never imported; the services are a leaf
    if s == d or d == "core":
        return True  # a layer uses itself (cycles are checked apart) and everyone may use the core
    if s in ("core", "engine"):
        return False
    if dst in SHARED_LEAVES:
        return True
    if d in ("engine", "gpu"):
        return s in ("gpu",)  # nothing under webapp reaches the GPU package
    if s in DOMAIN and d in DOMAIN:
        return DOMAIN.index(d) < DOMAIN.index(s)
    if s in DOMAIN:
        return False  # the domain never imports faces or wiring
    if s in FACES:
        return d in DOMAIN or (s, d) in FACE_EXCEPTIONS
    if s == "gpu":
        return d in DOMAIN
    return s == "wiring"  # urls and wsgi wire the faces and the domain together


def violations(sources: dict[str, str]) -> list[str]:
    problems = []
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, source in sources.items():
        for target, line, lazy in imports_of(name, source, sources):
            top = target.split(".")[0]
            if top in PACKAGES:
                if target not in sources:
                    continue  # a package's __init__ implicit import, or a name only
                graph[name].add(target)
                if not _allowed(name, target):
                    problems.append(f"{name}:{line} imports {target} ({_layer(name)} → {_layer(target)})")
                elif lazy and name not in LAZY_PROJECT_IMPORTS:
                    problems.append(
                        f"{name}:{line} imports {target} inside a function; move it to the top "
                        f"or say why in LAZY_PROJECT_IMPORTS"
                    )
            elif _layer(name) in ("core", "engine") and target.startswith(FRAMEWORKS):
                problems.append(f"{name}:{line} imports {target}: the {_layer(name)} must not need Django/Celery")
    problems += [f"import cycle: {' → '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_follows_the_layers():
    assert violations(module_sources()) == []


@pytest.mark.parametrize(
    "module, line, expected",
    [
        ("webapp.ledger.models", "from workers import tasks", "webapp.ledger.models:1 imports workers.tasks"),
        ("webapp.ledger.transitions", "from webapp.serving import routing", "imports webapp.serving.routing"),
        ("webapp.cache.store", "import webapp.api.views", "imports webapp.api.views"),
        ("scheduler.planner", "from webapp.ledger import models", "imports webapp.ledger.models"),
        ("scheduler.planner", "import django.db", "must not need Django"),
        ("workers.engine", "from django.conf import settings", "must not need Django"),
        ("webapp.api.views", "from webapp.dashboard import views", "imports webapp.dashboard.views"),
        ("webapp.serving.routing", "def f():\n    from webapp.cache import keys", "inside a function"),
    ],
)
def test_the_fence_catches_an_illegal_import(module, line, expected):
    sources = module_sources()
    sources[module] = line + "\n" + sources[module]
    assert any(expected in problem for problem in violations(sources)), violations(sources)


def test_the_fence_catches_a_cycle_inside_a_package():
    sources = module_sources()
    sources["webapp.ledger.transitions"] = "from . import reconcile\n" + sources["webapp.ledger.transitions"]
    assert any(p.startswith("import cycle:") and "webapp.ledger.reconcile" in p for p in violations(sources))
