"""Input checks for datasets (names and caption style; the trigger word is checked by
trainer.trigger_words, against the base model's tokenizers) and for the training settings that
count things."""

from __future__ import annotations

from django import forms
from django.conf import settings

# The presets module is plain data (the captioning package loads torch only on first use).
from trainer.engine.captioning.presets import CAPTIONER_PRESETS
from trainer.models import CaptionPlacement, Dataset
from trainer.trigger_words import TRIGGER_CHARACTERS, TRIGGER_RE



def offered_captioners() -> tuple[str, ...]:
    """The captioners a person may choose for a dataset: the presets, the studio's default and
    those the operator lists in CAPTIONERS. Never any other folder or hub id: the worker would
    load what it names, and its answer would tell which folders exist on the server."""
    offered = [*CAPTIONER_PRESETS, settings.CAPTIONER, *settings.CAPTIONERS]
    return tuple(dict.fromkeys(spec for spec in offered if spec))


def captioner_refusal(spec: str) -> str | None:
    """Why `spec` cannot be a dataset's captioner here; None when it can (blank: the default)."""
    if not spec or spec in offered_captioners():
        return None
    return (f"{spec[:80]!r} is not a captioner offered here; choose one of {', '.join(offered_captioners())} "
            "(the studio's operator can offer others with the CAPTIONERS setting)")
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
        # One of offered_captioners(): the worker resolves it and explains plainly when it cannot
        # be loaded (no weights here, no network).
        spec = " ".join(self.cleaned_data.get("captioner", "").split())
        # One kept as it was (chosen before this check, or since dropped from CAPTIONERS) does not
        # block saving the rest of the style; the worker refuses to load it, saying why.
        if spec != self.instance.captioner and (refusal := captioner_refusal(spec)):
            raise forms.ValidationError(refusal)
        return spec

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
