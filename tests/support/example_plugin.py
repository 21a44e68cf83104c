"""The example plug-in (``examples/gridwatch-example-detector``), installed for tests that
need a third-party plug-in discovered through its entry point."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from detectors.camera import refresh_plugins

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/gridwatch-example-detector"


def install_example_plugin() -> str:
    """Install the example plug-in into this interpreter (offline) if it is not there;
    its plug-in name. The ``example_plugin`` fixture (tests/conftest.py) calls it."""
    try:
        version("gridwatch-example-detector")
    except PackageNotFoundError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--no-index", "-e", str(EXAMPLE)],
            check=True,
        )
        import importlib
        import site
        import sysconfig

        # The editable install's .pth hook is read at start-up; read it now.
        site.addsitedir(sysconfig.get_paths()["purelib"])
        importlib.invalidate_caches()
    refresh_plugins()
    return "camera_obscured"
