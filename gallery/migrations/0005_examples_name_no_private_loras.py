"""Examples copied from generated images used to carry each LoRA's label as the generation row
had it: the owner's private training names too, shown to everyone once the model was published.
They now say "this model", a published model's title, or "a private LoRA"
(gallery.services_gallery.public_lora_label). The stored settings keep only the label, so here
a label is "this model" when it is the model's own title or its training's name, stays when a
published model has that title, and becomes "a private LoRA" otherwise."""

from django.db import migrations

THIS_MODEL = "this model"
PRIVATE_LORA = "a private LoRA"


def scrub_labels(apps, schema_editor):
    GalleryExample = apps.get_model("gallery", "GalleryExample")
    GalleryModel = apps.get_model("gallery", "GalleryModel")
    published = set(GalleryModel.objects.filter(published=True).values_list("title", flat=True))
    for example in GalleryExample.objects.select_related("gallery_model__training").iterator():
        loras = example.settings.get("loras") if isinstance(example.settings, dict) else None
        if not isinstance(loras, list):
            continue
        model = example.gallery_model
        own = {model.title, model.training.name if model.training_id else None}
        changed = False
        for lora in loras:
            if not isinstance(lora, dict) or lora.get("label") in (THIS_MODEL, PRIVATE_LORA):
                continue
            label = lora.get("label")
            new = THIS_MODEL if label in own else label if label in published else PRIVATE_LORA
            if new != label:
                lora["label"], changed = new, True
        if changed:
            example.save(update_fields=["settings"])


class Migration(migrations.Migration):
    dependencies = [
        ("gallery", "0004_generation_worker_heartbeat"),
    ]

    operations = [
        migrations.RunPython(scrub_labels, migrations.RunPython.noop),
    ]
