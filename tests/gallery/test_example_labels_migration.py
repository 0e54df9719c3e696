"""Upgrading scrubs private names from examples already published: an example copied from a
generated image used to name each LoRA as the owner saw it, private training names included."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from gallery.models import GalleryExample

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("gallery", "0004_generation_worker_heartbeat")


def migrate(gallery_at: tuple[str, str] | None = None):
    """Every app at its latest migration, and the gallery at `gallery_at` (latest when None); the
    models as they are there."""
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    if gallery_at:
        targets = [node for node in targets if node[0] != "gallery"] + [gallery_at]
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_upgrade_names_private_loras_in_old_examples_as_private():
    old = migrate(BEFORE)
    try:
        User, Job = old.get_model("auth", "User"), old.get_model("trainer", "TrainingJob")
        Model, Example = old.get_model("gallery", "GalleryModel"), old.get_model("gallery", "GalleryExample")
        alice, bob = (User.objects.create(username=name) for name in ("alice", "bob"))

        def model(owner, name: str, title: str, published: bool):
            job = Job.objects.create(owner=owner, name=name, base_model="tiny", trigger_word="zxq", config={},
                                     total_steps=4, state="succeeded", enqueued_at=timezone.now())
            return Model.objects.create(owner=owner, training=job, title=title, trigger_word="zxq", base_model="tiny",
                                        published=published)

        mine = model(alice, "alice lora", "Zxq the cat", True)
        model(bob, "bob lora", "Bob's watercolour", True)
        model(alice, "draft lora", "Unfinished draft", False)
        loras = [{"label": "alice lora", "scale": 1.0}, {"label": "Secret project", "scale": 0.5},
                 {"label": "Bob's watercolour", "scale": 0.7}, {"label": "Unfinished draft", "scale": 0.2}]
        from_generation = Example.objects.create(gallery_model=mine, prompt="p", image="e.png",
                                                 settings={"seed": 1, "loras": loras}).pk
        from_sample = Example.objects.create(gallery_model=mine, prompt="p", image="s.png",
                                             settings={"seed": 2, "source": "training sample, step 4"}).pk
        odd = Example.objects.create(gallery_model=mine, prompt="p", image="o.png", settings=["edited by hand"]).pk
    finally:
        migrate()  # whatever happened, the schema the other tests expect

    assert GalleryExample.objects.get(pk=from_generation).settings["loras"] == [
        {"label": "this model", "scale": 1.0}, {"label": "a private LoRA", "scale": 0.5},
        {"label": "Bob's watercolour", "scale": 0.7}, {"label": "a private LoRA", "scale": 0.2}]
    assert GalleryExample.objects.get(pk=from_sample).settings == {"seed": 2, "source": "training sample, step 4"}
    assert GalleryExample.objects.get(pk=odd).settings == ["edited by hand"], "settings of another shape: left alone"
