"""The ML engines are pure ML: importing any of their modules must not pull in Django.

Run in a fresh interpreter: in the test process Django is already imported by pytest-django.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, json, pkgutil, sys
names = []
for package in ("trainer.engine", "gallery.inference"):
    module = importlib.import_module(package)
    names.append(package)
    names += [i.name for i in pkgutil.walk_packages(module.__path__, package + ".") if not i.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "django": sorted(m for m in sys.modules if m.split(".")[0] == "django")}))
"""


def test_engine_modules_never_import_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the walk really covered the engines (so an empty list cannot pass by accident)
    assert {"trainer.engine.training", "trainer.engine.demo.pretrain", "gallery.inference.cache"} <= set(report["modules"])
    assert report["django"] == [], report["django"]
