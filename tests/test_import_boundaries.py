"""DESIGN.md: importing ``stream`` or ``ticketing`` (or running a replay) must not import
OpenCV, ONNX Runtime, torch or faust; ``geo`` imports nothing of ours."""

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
    ("geo", {"detectors", "stream", "ticketing", "edge", "gridwatch"}),
    ("detectors", {"stream", "ticketing", "edge", "gridwatch"}),
    ("stream", {"ticketing", "edge", "gridwatch"}),
    ("ticketing", {"edge", "detectors", "gridwatch"}),
    ("edge", {"stream", "ticketing", "gridwatch"}),
])
def test_imports_go_one_way(package, forbidden):
    assert _imports(package) & forbidden == set()
