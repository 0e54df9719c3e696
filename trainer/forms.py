"""Input checks for datasets: names, caption style, and advice on the trigger word.

The trigger word advice is a cheap heuristic on purpose: the real tokenizers (CLIP's BPE, T5's
SentencePiece) live in the worker, and web requests never import transformers. A good trigger
is short and rare, so the base model has no prior meaning for it to fight against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django import forms

from trainer.models import CaptionPlacement, Dataset

# Mirrors trainer.engine.captioning.CAPTIONER_PRESETS, which web code must not import (torch).
CAPTIONER_SUGGESTIONS = ("florence2", "florence2-base", "blip", "smolvlm", "qwen2.5-vl")
TRIGGER_RE = re.compile(r"^[A-Za-z0-9_-]{2,40}$")
TRIGGER_ADVICE = "Short and uncommon, like JELLOMOLD or ZXQ_MIRA: a made-up word the model has never seen."

# Common English words (and a few image words) that make poor triggers: the base model already
# knows them, so the LoRA's concept blends with their meaning.
COMMON_WORDS = frozenset("""
a about after again air all also always an and animal any are art as at away baby back bad ball
be bear beautiful bed been before best big bird black blue boat body book box boy bright brown
but by cake call came can car card cat chair child city clean close cloud coat cold color come
cool could cup cut dark day dead did dog door down dream dress drink each earth eat egg end eye
face fall family far fast father field fire first fish flower fly food foot for forest free
friend from front fun game garden gate get girl give glass go god gold good grass great green
hair hand happy hard has hat have he head heart her here high hill him his home horse hot house
how ice if in into is it job just key kid king kind lady lake land large last leaf left leg
light like line lion little live long look love low make man many map may me men milk mind moon
more morning mother mountain mouse mouth move much music my name new next nice night no nose
not now of off old on one only open or orange other our out over paint paper park party people
person photo picture pink place plant play portrait queen rain red rice right ring river road
rock room rose round run sad said same sand say sea see shadow ship shoe shop short show side
sky sleep slow small smile snow so soft some song space star stone story street style sun sweet
table tail take tall tea than that the their them then there they thing this time to top town
toy train tree true two under up us very walk wall war warm was water way we weather well were
what wheel when where white who wind window winter with woman wood word work world write year
yellow yes you young cute robot dragon ghost angel devil ninja pixel neon retro vintage pot pan mug bottle bag
""".split())
# Familiar fragments a BPE tokenizer keeps whole; a trigger made of several of them is read as
# those pieces ("redcat" → red + cat) rather than as one new word.
FRAGMENTS = COMMON_WORDS | frozenset(
    "ing er ed ly tion ness ment able pre re un in dis over out up super ultra mega micro mini "
    "pro man men boy girl land ville berg ton son stein bot tron".split()
)


@dataclass
class TriggerAdvice:
    word: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def familiar_pieces(word: str) -> list[str]:
    """Split `word` into familiar fragments when it is entirely made of them, else []."""
    pieces: list[str] = []
    for chunk in re.split(r"[_\-\d]+", word.lower()):
        if not chunk:
            continue
        split = _split_familiar(chunk)
        if split is None:
            return []
        pieces.extend(split)
    return pieces


def _split_familiar(chunk: str) -> list[str] | None:
    """Fewest-pieces split of `chunk` into FRAGMENTS (pieces of 2+ letters), or None."""
    best: list[list[str] | None] = [[]] + [None] * len(chunk)
    for end in range(1, len(chunk) + 1):
        for start in range(max(0, end - 12), end - 1):
            head, piece = best[start], chunk[start:end]
            if head is not None and piece in FRAGMENTS:
                candidate = head + [piece]
                if best[end] is None or len(candidate) < len(best[end]):
                    best[end] = candidate
    return best[len(chunk)]


def trigger_advice(word: str) -> TriggerAdvice:
    """Errors block saving (bad characters, length); warnings only advise."""
    word = word.strip()
    advice = TriggerAdvice(word)
    if not word:
        advice.warnings.append("No trigger word yet: without one the LoRA changes everything the model draws.")
        return advice
    if not TRIGGER_RE.match(word):
        advice.errors.append("Use 2–40 letters, digits, _ or - (no spaces).")
        return advice
    lower = word.lower()
    if lower in COMMON_WORDS:
        advice.warnings.append(f"“{word}” is a common English word: the model already has a meaning for it. {TRIGGER_ADVICE}")
        return advice
    pieces = familiar_pieces(word)
    if len(pieces) >= 2:
        advice.warnings.append(f"“{word}” splits into familiar tokens ({' + '.join(pieces)}), whose meanings leak in. {TRIGGER_ADVICE}")
    elif len(word) > 14:
        advice.warnings.append("Long words split into many tokens; a shorter one trains faster and is easier to type.")
    return advice


class DatasetNameForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)


class CaptionStyleForm(forms.ModelForm):
    """Trigger word and how auto-captions carry it; the trigger is checked by `trigger_advice`."""

    class Meta:
        model = Dataset
        fields = ["trigger_word", "caption_placement", "caption_prefix", "caption_suffix", "captioner"]

    def clean_trigger_word(self) -> str:
        word = self.cleaned_data.get("trigger_word", "").strip()
        advice = trigger_advice(word)
        if advice.errors:
            raise forms.ValidationError(advice.errors)
        return word

    def clean_captioner(self) -> str:
        # Free text on purpose (a preset, "kind:hub-id" or "kind:/local/folder"): the worker
        # resolves it and explains plainly when it cannot be loaded.
        return " ".join(self.cleaned_data.get("captioner", "").split())

    def clean_caption_placement(self) -> str:
        return self.cleaned_data.get("caption_placement") or CaptionPlacement.PREFIX
