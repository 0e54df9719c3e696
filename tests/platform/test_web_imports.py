"""The web process never loads the ML stack: views validate and enqueue, the worker computes.

A fresh interpreter sets Django up, builds the ASGI application, resolves every URL pattern to its
view, and imports the modules views call (services, selectors, tasks). None of that may import
torch, transformers, diffusers or peft: they cost seconds and gigabytes in every web process.
"""

from __future__ import annotations

import subprocess
import sys

CODE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_studio.settings")
import django
django.setup()
from django.urls import get_resolver
import flux_studio.asgi

def walk(patterns):
    for p in patterns:
        if hasattr(p, "url_patterns"):
            walk(p.url_patterns)
        else:
            p.callback

walk(get_resolver().url_patterns)
import trainer.tasks, gallery.tasks, flux_studio.tasks, flux_studio.api.tasks
import trainer.datasets, trainer.captions, trainer.jobs, trainer.selectors, trainer.forms
import gallery.services, gallery.services_gallery, gallery.selectors
heavy = ("torch", "transformers", "diffusers", "peft")
print(",".join(sorted(m for m in heavy if m in sys.modules)) or "none")
"""


def test_web_process_imports_no_ml_library():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "none", out.stdout + out.stderr
