"""Turn raw captioner output into FLUX training captions.

FLUX learns from natural sentences (its T5 encoder reads prose), so a caption is cleaned of
model artefacts and boilerplate, and the trigger word is put where it names the subject.
Every function here is pure and idempotent: styling an already styled caption returns it
unchanged, so re-running captioning or re-applying a style never stacks prefixes or triggers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Placement = Literal["prefix", "suffix", "replace"]
PLACEMENTS: tuple[str, ...] = ("prefix", "suffix", "replace")

# Florence-2 task tokens, BOS/EOS/pad markers, <loc_123> boxes, and chat-template leftovers.
_TAG = re.compile(
    r"<(?:/?s|pad|unk|mask|image|end_of_utterance|fake_token_around_image|global-img"
    r"|row_\d+_col_\d+|loc_\d+"
    r"|[A-Z_]*(?:CAPTION|OCR|OD|REGION|GROUNDING|SEGMENTATION|DETECTION|PROPOSAL)[A-Z_]*)>"
    r"|<\|[^|>]*\|>|\[(?:CLS|SEP|PAD|DEC|UNK|MASK)\]"
)
# Openers that say nothing about the picture; removed so the caption starts on its subject.
_BOILERPLATE = re.compile(
    r"^(?:(?:the|this)\s+(?:image|picture|photo(?:graph)?)\s+"
    r"(?:shows|depicts|features|displays|captures|presents|contains|is\s+of)\s*"
    r"|in\s+(?:the|this)\s+(?:image|picture|photo(?:graph)?),?\s*"
    r"|(?:this\s+is\s+)?an?\s+(?:image|picture|photo(?:graph)?|photography)\s+of\s+(?=(?:an?|the)\b)"
    r")",
    re.IGNORECASE,
)
# BLIP-large is known to emit these non-words at the start of captions.
_BLIP_ARTEFACTS = re.compile(r"\b(?:arafed|araffe|arafe|araffed|arafly)\b\s*", re.IGNORECASE)
# Words that start a body we lower-case when something (the trigger) is put in front of it.
_LOWER_OPENERS = {
    "a", "an", "the", "this", "that", "these", "those", "there", "two", "three", "four",
    "several", "some", "many", "one", "in", "on", "at", "inside", "outside", "close-up",
}
_DETERMINERS = {"a", "an", "the", "one"}
# Words that end a subject noun phrase: prepositions, conjunctions, auxiliaries.
_PHRASE_STOPS = {
    "on", "in", "at", "with", "and", "or", "by", "near", "under", "over", "behind", "beside",
    "next", "against", "of", "from", "to", "into", "onto", "above", "below", "while",
    "is", "are", "was", "were", "has", "have", "that", "which", "who", "wearing", "holding",
    "standing", "sitting", "lying", "looking", "walking", "running", "posing",
}
_LEAD_INS = {"there", "is", "are", "of"}  # may precede the subject: "there is a dog"
_SUBJECT_SEARCH_WORDS = 8  # a subject later than this is probably not the picture's subject
_SUBJECT_MAX_WORDS = 4  # determiner + up to three words: "a fluffy orange cat"


@dataclass(frozen=True)
class CaptionStyle:
    """How captions are written: the trigger word, where it goes, and text around every caption.

    placement:
      - ``prefix``: "JELLOMOLD, a cat sitting on a sofa."
      - ``suffix``: "A cat sitting on a sofa, JELLOMOLD."
      - ``replace``: the first subject noun phrase becomes the trigger: "JELLOMOLD sitting on a
        sofa." (see `replace_subject`); falls back to ``prefix`` when no subject is found.
    prefix / suffix: text joined with ", " before / after EVERY caption, whether or not the
    caption already carried the trigger.
    """

    trigger: str = ""
    placement: Placement = "prefix"
    prefix: str = ""
    suffix: str = ""

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {self.placement!r}")


def clean_caption(raw: str) -> str:
    """Strip task tokens and boilerplate, collapse whitespace, capitalise, end with a period."""
    text = _TAG.sub(" ", raw or "")
    text = _BLIP_ARTEFACTS.sub("", text)
    text = " ".join(text.split())
    previous = None
    while previous != text:  # "The image shows a photo of a cat" needs two passes
        previous = text
        text = _BOILERPLATE.sub("", text).lstrip(" ,:;-")
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])\1+", r"\1", text)
    text = text.strip(" ,;:-")
    if not text:
        return ""
    return _end_sentence(text[0].upper() + text[1:])


def style_caption(
    raw: str,
    *,
    trigger: str = "",
    placement: Placement = "prefix",
    prefix: str = "",
    suffix: str = "",
) -> str:
    """A FLUX caption from raw model text: cleaned, trigger placed once, prefix/suffix always.

    The trigger is never inserted twice: if the raw text, the prefix or the suffix already
    holds it (case-insensitive, as a whole word), the body is left alone and any
    differently-cased copies take the trigger's spelling.
    """
    style = CaptionStyle(trigger=trigger.strip(), placement=placement, prefix=prefix, suffix=suffix)
    prefix_text = _strip_joiners(style.prefix)
    suffix_text = _strip_joiners(style.suffix)
    body = clean_caption(raw)
    body = _strip_affix(body, prefix_text, suffix_text)
    if style.trigger:
        body = _normalise_trigger(body, style.trigger)
        already = any(_has_word(part, style.trigger) for part in (body, prefix_text, suffix_text))
        if not already:
            body = _place_trigger(body, style.trigger, style.placement)
    return _compose(prefix_text, body, suffix_text)


def template_caption(
    trigger: str,
    *,
    template: str = "a photo of {trigger}",
    prefix: str = "",
    suffix: str = "",
) -> str:
    """The no-model fallback caption, e.g. "a photo of JELLOMOLD.", with prefix/suffix applied."""
    if "{trigger}" not in template:
        raise ValueError("template must contain '{trigger}'")
    # Without a trigger there is nothing to name; "a photo" still gives a valid caption.
    body = template.replace("{trigger}", trigger.strip()).strip() if trigger.strip() else "a photo"
    return _compose(_strip_joiners(prefix), _end_sentence(body), _strip_joiners(suffix))


def replace_subject(body: str, trigger: str) -> str | None:
    """Replace the first subject noun phrase of `body` with `trigger`, or None if none is found.

    Heuristic (no tagger needed): within the first eight words, find a determiner (a / an /
    the / one) and take it with up to three following words, stopping at punctuation, a
    preposition, a conjunction, an auxiliary or an -ing verb. Only "there is/are" and "of" may
    come before it: after a verb or preposition the subject was something without a determiner
    ("man wearing a hat"), so None is returned. A container phrase followed by "of" ("a
    close-up of", "a photo of") is skipped so the thing inside it is replaced:
    "a close-up of a cat" -> "a close-up of JELLOMOLD".
    """
    tokens = list(re.finditer(r"[\w'-]+|[^\w\s]", body))
    for start_idx, token in enumerate(tokens[:_SUBJECT_SEARCH_WORDS]):
        word = token.group().lower()
        if word not in _DETERMINERS:
            if word in _LEAD_INS or not (word in _PHRASE_STOPS or word.endswith("ing")):
                continue
            return None  # a verb or preposition came first: the subject had no determiner
        end_idx = start_idx
        while end_idx + 1 < len(tokens) and end_idx - start_idx + 1 < _SUBJECT_MAX_WORDS:
            word = tokens[end_idx + 1].group()
            if not re.match(r"\w", word) or word.lower() in _PHRASE_STOPS or word.endswith("ing"):
                break
            end_idx += 1
        if end_idx == start_idx:
            continue  # a bare determiner is not a phrase
        following = tokens[end_idx + 1].group().lower() if end_idx + 1 < len(tokens) else ""
        if following == "of":
            continue  # container phrase: look for the determiner after "of"
        start, end = tokens[start_idx].start(), tokens[end_idx].end()
        return body[:start] + trigger + body[end:]
    return None


def _place_trigger(body: str, trigger: str, placement: Placement) -> str:
    if not body:
        return trigger
    if placement == "replace":
        replaced = replace_subject(body, trigger)
        if replaced is not None:
            return replaced
    if placement == "suffix":
        return _end_sentence(f"{body.rstrip('.!? ')}, {trigger}")
    return f"{trigger}, {_lower_opener(body)}"


def _compose(prefix: str, body: str, suffix: str) -> str:
    """Join prefix, body and suffix with ", " and end the whole caption with a period."""
    text = body.rstrip(".!? ") if suffix else body
    if prefix:
        joiner = " " if prefix[-1] in ".!?:" else ", "
        text = f"{prefix}{joiner}{_lower_opener(text)}" if text else prefix
    if suffix:
        text = f"{text}, {suffix}" if text else suffix
    return _end_sentence(text.strip()) if text.strip() else ""


def _strip_affix(body: str, prefix: str, suffix: str) -> str:
    """Drop a prefix/suffix the caption already carries, so re-styling never stacks them."""
    if prefix and body.lower().startswith(prefix.lower()):
        body = body[len(prefix):].lstrip(" ,")
        body = body[:1].upper() + body[1:]
    bare = body.rstrip(".!? ")
    if suffix and bare.lower().endswith(suffix.lower().rstrip(".!? ")):
        body = _end_sentence(bare[: len(bare) - len(suffix.rstrip(".!? "))].rstrip(" ,"))
    return body if body.strip(" .") else ""


def _normalise_trigger(text: str, trigger: str) -> str:
    return _word_pattern(trigger).sub(lambda _: trigger, text)


def _has_word(text: str, word: str) -> bool:
    return bool(word) and _word_pattern(word).search(text) is not None


def _word_pattern(word: str) -> re.Pattern[str]:
    # Not \b: triggers may start or end with non-word characters such as "<sks>".
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)


def _lower_opener(text: str) -> str:
    first = text.split(" ", 1)[0].rstrip(",")
    shouted = len(first) > 1 and first.isupper()  # an acronym or a trigger, keep it
    if first.lower() in _LOWER_OPENERS and first[:1].isupper() and not shouted:
        return text[0].lower() + text[1:]
    return text


def _strip_joiners(text: str) -> str:
    return " ".join((text or "").split()).strip(" ,;")


def _end_sentence(text: str) -> str:
    text = text.rstrip(" ,;:-")
    if text and text[-1] not in ".!?":
        text += "."
    return text
