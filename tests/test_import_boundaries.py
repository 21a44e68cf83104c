"""DESIGN.md: importing ``stream`` or ``ticketing`` (or running a replay) must not import
OpenCV, ONNX Runtime, torch or faust; imports between our packages go one way, and each
shared contract has one home that both sides import (docs/contracts.md, "Where each
contract lives")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("cv2", "onnxruntime", "torch", "faust", "ultralytics", "matplotlib")


@pytest.mark.parametrize("modules", [
    "stream, stream.processor, stream.hotspot, stream.dedup",
    "ticketing, ticketing.desk, ticketing.store, ticketing.api.app",
    "gridwatch.replay, gridwatch.embedded, gridwatch.cli",
    "detectors.schema",
    "configs.reader, configs.mqtt, geo.admin",
])
def test_light_modules_do_not_import_heavy_ones(modules):
    code = (f"import sys; import {modules}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == ""


def _imports(package: str) -> set[str]:
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("configs", {"geo", "detectors", "stream", "ticketing", "edge", "gridwatch"}),
    ("geo", {"configs", "detectors", "stream", "ticketing", "edge", "gridwatch"}),
    ("detectors", {"stream", "ticketing", "edge", "gridwatch"}),
    ("stream", {"ticketing", "edge", "gridwatch"}),
    ("ticketing", {"edge", "detectors", "gridwatch"}),
    ("edge", {"stream", "ticketing", "gridwatch"}),
])
def test_imports_go_one_way(package, forbidden):
    assert _imports(package) & forbidden == set()


OURS = ("configs", "geo", "detectors", "stream", "ticketing", "edge", "gridwatch")
ROOTS = (*OURS, "tests", "benchmarks", "scripts", "examples")


def _imported_modules(package: str) -> dict[str, set[str]]:
    """``{module of ours imported by package: {files that import it}}`` (absolute imports,
    at any depth, lazy ones in functions included)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                if name.split(".")[0] in OURS:
                    found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


# Finer than the package rule: what one package may reach of another (DESIGN.md's
# "stream -> detectors (schema)", "ticketing -> stream (schema)"). None: everything.
REACH = {
    "stream": {"detectors": {"detectors.schema"}, "geo": None},
    "ticketing": {"stream": {"stream.types", "stream.processor", "stream.policy"},
                  "geo": None},
    "detectors": {"configs": {"configs.reader"}},
    "edge": {"detectors": None, "configs": None},
}


@pytest.mark.parametrize("package", sorted(REACH))
def test_a_package_reaches_only_the_contract_modules_of_another(package):
    allowed = REACH[package]
    outside = {}
    for module, files in _imported_modules(package).items():
        top = module.split(".")[0]
        if top == package:
            continue
        if top not in allowed:
            outside[module] = files
        elif allowed[top] is not None and module not in allowed[top]:
            outside[module] = files
    assert outside == {}


# One home per contract (docs/contracts.md): each name is defined in its home module only,
# and every import of it, anywhere in the tree, names that module.
HOMES = {
    "Detection": "detectors.schema",
    "ConfigFileError": "configs.reader",
    "read_yaml_mapping": "configs.reader",
    "validate_config": "configs.reader",
    "format_validation_error": "configs.reader",
    "MqttConnection": "configs.mqtt",
    "TlsSettings": "configs.mqtt",
    "make_client": "configs.mqtt",
    "Level": "geo.admin",
    "LEVEL_NAMES": "geo.admin",
    "unit_at": "geo.admin",
    "Mode": "stream.policy",
    "Priority": "stream.policy",
    "KindPolicy": "stream.policy",
    "PolicyBook": "stream.policy",
    "Workers": "edge.workers",
    "detection_topic": "detectors.topics",
    "evidence_topic": "detectors.topics",
    "status_topic": "detectors.topics",
    "receipt_topic": "detectors.topics",
    "deadletter_topic": "detectors.topics",
    "parse_topic": "detectors.topics",
    "parse_source_topic": "detectors.topics",
    "wait_until": "tests.support.waiting",  # a test tool, not in a runtime package
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _contract_uses() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``({name: {modules defining it}}, {name: {"file: module" it is imported from}})``."""
    defined: dict[str, set[str]] = {}
    imported: dict[str, set[str]] = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            if ".venv" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            for node in tree.body:
                targets: list[str] = []
                if isinstance(node, ast.ClassDef | ast.FunctionDef):
                    targets = [node.name]
                elif isinstance(node, ast.Assign):
                    targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    targets = [node.target.id]
                for name in targets:
                    if name in HOMES:
                        defined.setdefault(name, set()).add(_module_name(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                        and node.module.split(".")[0] in OURS:
                    for alias in node.names:
                        if alias.name in HOMES:
                            imported.setdefault(alias.name, set()).add(
                                f"{path.relative_to(REPO)}: {node.module}")
    return defined, imported


def test_each_contract_is_defined_once_in_its_home():
    defined, _ = _contract_uses()
    assert {name: defined.get(name) for name in HOMES} == \
        {name: {home} for name, home in HOMES.items()}


def test_each_contract_is_imported_from_its_home():
    _, imported = _contract_uses()
    stray = {name: sorted(u for u in uses if not u.endswith(": " + HOMES[name]))
             for name, uses in imported.items()}
    assert {name: uses for name, uses in stray.items() if uses} == {}
