"""Parsing of the generation and publishing forms (types and shapes); the rules are the services'."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import QueryDict

from gallery.defaults import LIMITS
from gallery.models import GalleryModel
from gallery.services import LoraChoice

SIZE_RE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
REF_RE = re.compile(r"^(training|gallery):(\d+)$")


class GenerationForm(forms.Form):
    prompt = forms.CharField(max_length=LIMITS["prompt_chars"][1], widget=forms.Textarea(attrs={"rows": 3}))
    base_model = forms.ChoiceField(choices=())
    seed_mode = forms.ChoiceField(choices=(("random", "Random"), ("fixed", "Fixed")), initial="random")
    seed = forms.IntegerField(required=False, min_value=LIMITS["seed"][0], max_value=LIMITS["seed"][1])
    steps = forms.IntegerField(min_value=LIMITS["steps"][0], max_value=LIMITS["steps"][1])
    guidance = forms.FloatField(min_value=LIMITS["guidance"][0], max_value=LIMITS["guidance"][1])
    size = forms.RegexField(regex=SIZE_RE, error_messages={"invalid": "choose a size like 1024x1024"})
    num_images = forms.IntegerField(label="Images", min_value=LIMITS["num_images"][0], max_value=LIMITS["num_images"][1],
                                    initial=1)

    def __init__(self, data: QueryDict | None = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.fields["base_model"].choices = [(b, b) for b in settings.BASE_MODELS]
        self.loras: list[LoraChoice] = []
        self._lora_refs: list[str] = []
        self._lora_scales: list[str] = []
        if data is not None:
            self._lora_refs = data.getlist("lora")
            self._lora_scales = data.getlist("lora_scale")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("seed_mode") == "fixed" and cleaned.get("seed") is None and "seed" not in self.errors:
            self.add_error("seed", "give a seed, or choose a random one")
        self.loras = self._clean_loras()
        size = SIZE_RE.match(cleaned.get("size") or "")
        if size:
            cleaned["width"], cleaned["height"] = int(size.group(1)), int(size.group(2))
        return cleaned

    def _clean_loras(self) -> list[LoraChoice]:
        """Parallel lists `lora` ("training:3") and `lora_scale`; empty rows are skipped."""
        choices = []
        scales = list(self._lora_scales) + ["1"] * (len(self._lora_refs) - len(self._lora_scales))
        for ref, scale in zip(self._lora_refs, scales):
            if not ref:
                continue
            match = REF_RE.match(ref)
            if not match:
                self.add_error(None, f"unknown LoRA reference {ref[:40]!r}")
                continue
            try:
                value = float(scale or 1)
            except ValueError:
                self.add_error(None, f"LoRA scale {scale[:20]!r} is not a number")
                continue
            choices.append(LoraChoice(kind=match.group(1), id=int(match.group(2)), scale=value))
        return choices

    def service_kwargs(self) -> dict[str, Any]:
        c = self.cleaned_data
        return {
            "prompt": c["prompt"], "base_model": c["base_model"], "loras": self.loras,
            "seed": c["seed"] if c["seed_mode"] == "fixed" else None, "steps": c["steps"], "guidance": c["guidance"],
            "width": c["width"], "height": c["height"], "num_images": c["num_images"],
        }


class PublishForm(forms.Form):
    """The publishing page's details. Every rule (a title, one trigger word, a known license, at
    most 8 tags) is `services_gallery.gallery_model_update`'s, so that the page and the API answer
    alike: this form only carries what was typed back to the page, with the service's errors."""

    title = forms.CharField(required=False, strip=False)
    description = forms.CharField(required=False, strip=False)
    trigger_word = forms.CharField(required=False, strip=False)
    license = forms.CharField(required=False)
    tags = forms.CharField(required=False, strip=False)

    @classmethod
    def of(cls, model: GalleryModel) -> PublishForm:
        """The form as the model stands (unbound)."""
        return cls(initial={"title": model.title, "description": model.description, "trigger_word": model.trigger_word,
                            "license": model.license, "tags": ", ".join(model.tags)})

    def add_service_errors(self, exc: ValidationError) -> None:
        """The service's errors next to their fields; the others (examples, training) above the form."""
        self.is_valid()  # binds cleaned_data, which add_error needs; every field is accepted as typed
        for field, errors in (exc.message_dict if hasattr(exc, "message_dict") else {None: exc.messages}).items():
            self.add_error(field if field in self.fields else None, errors)
