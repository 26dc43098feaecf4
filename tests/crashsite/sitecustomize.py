"""Installs ``tests/crashhook.py`` in every interpreter a crash test starts (``crashhook.environment``)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("gitmirror_crashhook", Path(__file__).parent.parent / "crashhook.py")
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.install()
