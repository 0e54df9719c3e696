"""Generations (prompting with LoRAs) and the community gallery of published models."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from flux_studio.files import UserUploadPath


class GenerationState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class Generation(models.Model):
    """One generation request: a prompt, LoRAs with scales, and the settings it ran with."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    prompt = models.TextField()
    base_model = models.CharField(max_length=200)
    # [{"kind": "training"|"gallery", "id": 3, "scale": 1.0}]: resolved to files by the worker.
    loras = models.JSONField(default=list, blank=True)
    seed = models.BigIntegerField()
    # The seed was drawn for this request (Seed: Random): its page keeps Random for the next one.
    seed_random = models.BooleanField(default=False)
    steps = models.PositiveSmallIntegerField()
    guidance = models.FloatField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    num_images = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=10, choices=GenerationState.choices, default=GenerationState.QUEUED)
    step = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The heartbeat row of the worker running it (flux_studio.worker): one that died leaves it
    # running, and the next worker (or the minute's check) ends it. Null: queued, or run inline.
    worker_heartbeat = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prompt[:40]} ({self.state})"

    @property
    def topic(self) -> str:
        return f"generation-{self.pk}"


class GenerationImage(models.Model):
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    seed = models.BigIntegerField()
    image = models.FileField(upload_to=UserUploadPath("generations"), max_length=255)
    thumbnail = models.FileField(upload_to=UserUploadPath("thumbs"), max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["index"]


class License(models.TextChoices):
    FLUX_DEV_NC = "flux-1-dev-non-commercial", "FLUX.1 [dev] Non-Commercial License"
    APACHE_2 = "apache-2.0", "Apache 2.0"
    CC_BY_4 = "cc-by-4.0", "CC BY 4.0"
    CC_BY_NC_4 = "cc-by-nc-4.0", "CC BY-NC 4.0"
    MIT = "mit", "MIT"


class HubState(models.TextChoices):
    NONE = "", "Not pushed"
    PUSHING = "pushing", "Pushing"
    PUSHED = "pushed", "Pushed"
    FAILED = "failed", "Failed"


class GalleryModel(models.Model):
    """A trained LoRA that its owner published (or is preparing to publish)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gallery_models")
    training = models.OneToOneField("trainer.TrainingJob", on_delete=models.CASCADE, related_name="gallery_model")
    title = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    trigger_word = models.CharField(max_length=40)
    base_model = models.CharField(max_length=200)
    license = models.CharField(max_length=40, choices=License.choices, default=License.FLUX_DEV_NC)
    tags = models.JSONField(default=list, blank=True)
    published = models.BooleanField(default=False, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    like_count = models.PositiveIntegerField(default=0)
    use_count = models.PositiveIntegerField(default=0)
    # Sizes and checksums of the two LoRA files, taken when publishing so pages never hash.
    lora_size = models.PositiveBigIntegerField(default=0)
    lora_sha256 = models.CharField(max_length=64, blank=True)
    kohya_size = models.PositiveBigIntegerField(default=0)
    kohya_sha256 = models.CharField(max_length=64, blank=True)
    hub_repo = models.CharField(max_length=200, blank=True)
    hub_url = models.URLField(max_length=400, blank=True)
    hub_pushed_at = models.DateTimeField(null=True, blank=True)
    # Push to the Hugging Face Hub (gallery.hub): state of the last request, when it was asked
    # for (a push stuck in "pushing" for long may be asked again), and why it failed.
    hub_state = models.CharField(max_length=10, choices=HubState.choices, default=HubState.NONE, blank=True)
    hub_requested_at = models.DateTimeField(null=True, blank=True)
    hub_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-published_at", "-created_at"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("gallery:model_detail", args=[self.pk])


class GalleryExample(models.Model):
    gallery_model = models.ForeignKey(GalleryModel, on_delete=models.CASCADE, related_name="examples")
    image = models.FileField(upload_to=UserUploadPath("examples"), max_length=255)
    thumbnail = models.FileField(upload_to=UserUploadPath("thumbs"), max_length=255, blank=True)
    prompt = models.TextField()
    settings = models.JSONField(default=dict, blank=True)
    is_cover = models.BooleanField(default=False)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-is_cover", "position", "id"]


class Like(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    gallery_model = models.ForeignKey(GalleryModel, on_delete=models.CASCADE, related_name="likes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "gallery_model"], name="one_like_per_user")]
