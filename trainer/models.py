"""Datasets of photos with captions, and the training jobs made from them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from flux_studio.files import UserUploadPath


class CaptionPlacement(models.TextChoices):
    PREFIX = "prefix", "Before the caption"
    SUFFIX = "suffix", "After the caption"
    REPLACE = "replace", "Instead of the subject"


class Dataset(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    trigger_word = models.CharField(max_length=40, blank=True)
    # How auto-captions are written (see trainer.engine.captioning.CaptionStyle): where the
    # trigger goes and text put before/after every caption.
    caption_placement = models.CharField(max_length=8, choices=CaptionPlacement.choices, default=CaptionPlacement.PREFIX)
    caption_prefix = models.CharField(max_length=200, blank=True)
    caption_suffix = models.CharField(max_length=200, blank=True)
    # A captioner spec (preset name or kind:path); blank means settings.CAPTIONER.
    captioner = models.CharField(max_length=200, blank=True)
    # The instruction an instruction-following captioner (SmolVLM, Qwen2.5-VL) is given, or a
    # Florence-2 task token; blank means settings.CAPTION_PROMPT, else the engine's default.
    caption_prompt = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("trainer:dataset_detail", args=[self.pk])

    @property
    def topic(self) -> str:
        return f"dataset-{self.pk}"


class CaptionSource(models.TextChoices):
    NONE = "none", "No caption"
    FILE = "file", "From an uploaded .txt"
    AUTO = "auto", "Suggested by the captioner"
    TEMPLATE = "template", "Trigger-word template"
    USER = "user", "Written by the owner"


class Photo(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="photos")
    original_name = models.CharField(max_length=255)
    original = models.FileField(upload_to=UserUploadPath("originals"), max_length=255)
    # RGB copy with EXIF orientation applied and metadata (location included) stripped: what trains.
    image = models.FileField(upload_to=UserUploadPath("photos"), max_length=255)
    thumbnail = models.FileField(upload_to=UserUploadPath("thumbs"), max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    size_bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    phash = models.CharField(max_length=32, blank=True)
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    warnings = models.JSONField(default=list, blank=True)
    caption = models.TextField(blank=True)
    caption_source = models.CharField(max_length=10, choices=CaptionSource.choices, default=CaptionSource.NONE)
    caption_error = models.CharField(max_length=300, blank=True)
    excluded = models.BooleanField(default=False, help_text="kept in the dataset but not trained on")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "sha256"], name="unique_photo_bytes_per_dataset")]

    def __str__(self) -> str:
        return self.original_name


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    STARTING = "starting", "Starting"
    TRAINING = "training", "Training"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


ACTIVE_STATES = (JobState.QUEUED, JobState.STARTING, JobState.TRAINING)
FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


class TrainingJob(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_jobs")
    dataset = models.ForeignKey(Dataset, null=True, on_delete=models.SET_NULL, related_name="jobs")
    name = models.CharField(max_length=120)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    base_model = models.CharField(max_length=200)
    trigger_word = models.CharField(max_length=40)
    # The engine config as launched (frozen) and the captions as trained, so later dataset edits
    # never change what a job was.
    config = models.JSONField()
    snapshot = models.JSONField(default=list)
    total_steps = models.PositiveIntegerField()
    step = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    it_per_s = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    checkpoint_step = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    worker_id = models.CharField(max_length=120, blank=True)
    error = models.TextField(blank=True)
    error_hint = models.CharField(max_length=300, blank=True)
    lora_file = models.FileField(upload_to=UserUploadPath("loras"), max_length=255, blank=True)
    kohya_file = models.FileField(upload_to=UserUploadPath("loras"), max_length=255, blank=True)
    config_file = models.FileField(upload_to=UserUploadPath("configs"), max_length=255, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="continuations")
    created_at = models.DateTimeField(auto_now_add=True)
    # When the job last joined the back of the GPU queue (created, resumed, recovered): the queue
    # order, so a resumed job counts from its re-enqueue, not from its creation.
    enqueued_at = models.DateTimeField(default=timezone.now)
    # The first start: a resumed job keeps it. The time it has run leaves out the hours it sat
    # canceled, failed or queued between runs: `ran_seconds` adds up the runs that have ended
    # before the latest one, which began at `run_started_at` (see `run_time`).
    started_at = models.DateTimeField(null=True, blank=True)
    run_started_at = models.DateTimeField(null=True, blank=True)
    ran_seconds = models.FloatField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # The queue's positions are read at every enqueue, claim and finish: the waiting jobs, in order.
        indexes = [models.Index(fields=["state", "enqueued_at", "id"], name="trainer_job_queue_order")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("trainer:job_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def topic(self) -> str:
        return f"training-{self.pk}"

    def run_time(self) -> float | None:
        """Seconds the job has run, all its runs together, once it has stopped; None before it
        ran or while it runs or waits (the API's `metrics.predict_time`)."""
        if self.finished_at is None or self.started_at is None:
            return None
        latest = (self.finished_at - self.run_started_at).total_seconds() if self.run_started_at else 0.0
        return self.ran_seconds + max(0.0, latest)


class TrainingSample(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    prompt = models.TextField()
    image = models.FileField(upload_to=UserUploadPath("samples"), max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
