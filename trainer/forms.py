"""Input checks for datasets (names and caption style; the trigger word is checked by
trainer.trigger_words, against the base model's tokenizers) and for the training settings that
count things."""

from __future__ import annotations

from django import forms

# The presets module is plain data (the captioning package loads torch only on first use).
from trainer.engine.captioning.presets import CAPTIONER_PRESETS
from trainer.models import CaptionPlacement, Dataset
from trainer.trigger_words import TRIGGER_CHARACTERS, TRIGGER_RE

CAPTIONER_SUGGESTIONS = tuple(CAPTIONER_PRESETS)
WHOLE_NUMBER = {"invalid": "must be a whole number"}


class DatasetNameForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)


class CaptionStyleForm(forms.ModelForm):
    """Trigger word and how auto-captions carry it. Only the trigger's characters can block
    saving; the advice on how rare it is (trainer.trigger_words) is shown, never enforced."""

    class Meta:
        model = Dataset
        fields = ["trigger_word", "caption_placement", "caption_prefix", "caption_suffix", "captioner", "caption_prompt"]

    def clean_trigger_word(self) -> str:
        word = self.cleaned_data.get("trigger_word", "").strip()
        if word and not TRIGGER_RE.match(word):
            raise forms.ValidationError(TRIGGER_CHARACTERS)
        return word

    def clean_captioner(self) -> str:
        # Free text on purpose (a preset, "kind:hub-id" or "kind:/local/folder"): the worker
        # resolves it and explains plainly when it cannot be loaded.
        return " ".join(self.cleaned_data.get("captioner", "").split())

    def clean_caption_prompt(self) -> str:
        return " ".join(self.cleaned_data.get("caption_prompt", "").split())

    def clean_caption_placement(self) -> str:
        return self.cleaned_data.get("caption_placement") or CaptionPlacement.PREFIX


class WholeSettingsForm(forms.Form):
    """The launch and continue forms' settings that count things: "1.5" steps is refused as not
    whole (not as "not a number"). Their ranges, and every other setting, are checked by
    jobs.clean_settings, as for the API; empty means the preset's value."""

    steps = forms.IntegerField(required=False, error_messages=WHOLE_NUMBER)
    lora_rank = forms.IntegerField(required=False, error_messages=WHOLE_NUMBER)
    batch_size = forms.IntegerField(required=False, error_messages=WHOLE_NUMBER)
    sample_every = forms.IntegerField(required=False, error_messages=WHOLE_NUMBER)
    seed = forms.IntegerField(required=False, error_messages=WHOLE_NUMBER)
