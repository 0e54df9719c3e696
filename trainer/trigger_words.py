"""Advice on a trigger word, read off the base model's own tokenizers where they are on disk.

A good trigger is short and rare, so the base model has no prior meaning for it to fight
against. What the model "knows" is decided by its tokenizers (FLUX: CLIP's byte-level BPE in
`tokenizer/`, T5's unigram in `tokenizer_2/`), so the word is split with them and the advice
reports each split: a word that is a single known token, or that splits into familiar
whole-word tokens (JELLOMOLD -> jello + mold), drags those meanings in.

Web requests never import torch or transformers: the tokenizer files are read with the
`tokenizers` package (Rust, no torch), once per process. When a base's tokenizer files are not
on this machine (a hub model not yet downloaded, the `tiny` base never saved), the advice falls
back to a word list and says so.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

# Torch-free: where the engine keeps each base's files, the same functions the engine loads with.
from trainer.engine.presets import base_source, looks_like_hub_id, preset_for, tiny_base_folder

log = logging.getLogger(__name__)

TRIGGER_RE = re.compile(r"^[A-Za-z0-9_-]{2,40}$")
TRIGGER_CHARACTERS = "Use 2–40 letters, digits, _ or - (no spaces)."
TRIGGER_ADVICE = "Short and uncommon, like JELLOMOLD or ZXQ_MIRA: a made-up word the model has never seen."
# FLUX keeps CLIP's tokenizer in tokenizer/ and T5's in tokenizer_2/ (diffusers layout).
TOKENIZER_FOLDERS = (("tokenizer", "CLIP"), ("tokenizer_2", "T5"))
# A piece counts as familiar when the vocabulary holds it as a whole word of 3+ characters;
# shorter ones ("re", "on") are in every word and mean little on their own.
FAMILIAR_MIN_CHARS = 3
# Familiar pieces covering this share of the word's characters make it read as those words.
FAMILIAR_SHARE = 0.6
_WORD_MARKS = ("</w>", "\u2581", "\u0120")  # CLIP's end of word, T5's and GPT-2's word start

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
class TokenSplit:
    """How one tokenizer of the base splits the word."""

    tokenizer: str  # "CLIP" or "T5"
    pieces: list[str]  # as a person reads them: word marks removed
    familiar: list[str]  # the pieces the vocabulary also holds as whole words

    @property
    def count(self) -> int:
        return len(self.pieces)

    def as_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "count": self.count, "pieces": self.pieces, "familiar": self.familiar}


@dataclass
class TriggerAdvice:
    word: str
    base: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the word was checked, per tokenizer
    splits: list[TokenSplit] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def trigger_advice(word: str, base: str | None = None) -> TriggerAdvice:
    """Errors block saving (bad characters, length); warnings only advise.

    `base` is the base model the LoRA will train on; the launch default when not given.
    """
    word = word.strip()
    advice = TriggerAdvice(word, base or settings.DEFAULT_BASE_MODEL)
    if not word:
        advice.warnings.append("No trigger word yet: without one the LoRA changes everything the model draws.")
        return advice
    if not TRIGGER_RE.match(word):
        advice.errors.append(TRIGGER_CHARACTERS)
        return advice
    if word.lower() in COMMON_WORDS:
        advice.warnings.append(f"“{word}” is a common English word: the model already has a meaning for it; "
                               "a made-up word works better.")
    tokenizers, missing = base_tokenizers(advice.base)
    if tokenizers:
        _advise_from_tokenizers(advice, tokenizers)
    else:
        advice.notes.append(f"The {advice.base} base's tokenizers are not on this machine ({missing}), "
                            "so the word was checked against a list of common words instead.")
        _advise_from_word_list(advice)
    if len(word) > 14 and not advice.warnings:
        advice.warnings.append("Long words split into many tokens; a shorter one trains faster and is easier to type.")
    return advice


def _advise_from_tokenizers(advice: TriggerAdvice, tokenizers: list[tuple[str, Any]]) -> None:
    word, letters = advice.word, sum(ch.isalnum() for ch in advice.word)
    known, leaky = [], []
    for label, tokenizer in tokenizers:
        split = split_word(label, tokenizer, word)
        advice.splits.append(split)
        advice.notes.append(f"{label} tokenizer of the {advice.base} base: {split.count} "
                            f"piece{'s' if split.count != 1 else ''} ({' · '.join(split.pieces)}).")
        if split.count == 1 and split.familiar:
            known.append(label)
        elif split.count > 1 and sum(len(p) for p in split.familiar) >= FAMILIAR_SHARE * letters:
            leaky.append(f"{label}: {' + '.join(split.pieces)}")
    if known:
        advice.warnings.append(f"“{word}” is a single token the {' and '.join(known)} tokenizer"
                               f"{'s' if len(known) > 1 else ''} already know{'' if len(known) > 1 else 's'}: "
                               "the model has a meaning for it. Pick a made-up word.")
    if leaky:
        advice.warnings.append(f"“{word}” splits into familiar tokens ({'; '.join(leaky)}), whose meanings "
                               "leak in. Pick a made-up word.")
    _advise_on_caption_room(advice)


def _advise_on_caption_room(advice: TriggerAdvice) -> None:
    """A base that reads few T5 tokens per caption (the demo base: 16) cuts captions; a word that
    takes more than half of them (with the end token) leaves a caption little room."""
    t5 = next((split for split in advice.splits if split.tokenizer == "T5"), None)
    room = preset_for(advice.base).max_sequence_length
    if t5 is None or t5.count + 1 <= room / 2:
        return
    if t5.count + 1 >= room:
        advice.warnings.append(f"“{advice.word}” takes {t5.count} T5 tokens, and a caption gets {room} on the "
                               f"{advice.base} base (one of them ends it): captions would hold nothing else. "
                               "Pick a shorter word.")
    else:
        advice.warnings.append(f"“{advice.word}” takes {t5.count} of the {room} T5 tokens a caption gets on the "
                               f"{advice.base} base (one more ends it): words past the {room - t5.count - 1} left "
                               "are cut from each caption. A shorter word leaves the captions more room.")


def caption_room_warning(captions: list[str], base: str) -> str:
    """What the launch page says when captions are longer than the T5 tokens the base reads per
    caption (the engine cuts them, and its log says so only once the run has begun); empty when
    they fit, or when the base's T5 tokenizer is not on this machine to count with."""
    t5 = next((tokenizer for label, tokenizer in base_tokenizers(base)[0] if label == "T5"), None)
    if t5 is None or not captions:
        return ""
    room = preset_for(base).max_sequence_length
    # + 1: the end token the pipeline adds (tokenizer files may not add it themselves)
    long = sum(len(t5.encode(caption, add_special_tokens=False).ids) + 1 > room for caption in captions)
    if not long:
        return ""
    return (f"{long} of {len(captions)} caption{'s' if len(captions) != 1 else ''} {'is' if long == 1 else 'are'} longer "
            f"than the {room} T5 tokens the {base} base reads per caption: their ends are cut while training. "
            "Shorter captions, or a base that reads more (FLUX.1: 512), keep every word.")


def _advise_from_word_list(advice: TriggerAdvice) -> None:
    if advice.word.lower() in COMMON_WORDS:
        return  # already warned
    pieces = familiar_pieces(advice.word)
    if len(pieces) >= 2:
        advice.warnings.append(f"“{advice.word}” splits into familiar pieces ({' + '.join(pieces)}), "
                               "whose meanings leak in; a made-up word works better.")


def split_word(label: str, tokenizer: Any, word: str) -> TokenSplit:
    """The word's pieces under one `tokenizers.Tokenizer`, and which are whole words it knows."""
    tokens = tokenizer.encode(word, add_special_tokens=False).tokens
    vocab = tokenizer.get_vocab()
    pieces, familiar = [], []
    for token in tokens:
        text = _bare(token)
        if not text:
            continue  # a lone word-start mark ("▁") is no piece of the word
        pieces.append(text)
        if len(text) >= FAMILIAR_MIN_CHARS and _is_whole_word(text, vocab):
            familiar.append(text)
    return TokenSplit(label, pieces, familiar)


def _bare(token: str) -> str:
    for mark in _WORD_MARKS:
        token = token.replace(mark, "")
    return token


def _is_whole_word(text: str, vocab: dict[str, int]) -> bool:
    """Whether the vocabulary holds `text` as a word of its own, in any tokenizer's notation."""
    return any(form in vocab for form in (f"{text}</w>", f"\u2581{text}", f"\u0120{text}"))


# --- the word-list fallback ----------------------------------------------------------------


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


# --- finding and loading the base's tokenizers --------------------------------------------


def base_tokenizers(base: str) -> tuple[list[tuple[str, Any]], str]:
    """[(label, tokenizer)] for the base's CLIP and T5 tokenizers found here, and when none are
    found, a short reason why."""
    found, reasons = [], []
    for folder, label in TOKENIZER_FOLDERS:
        files = tokenizer_files(base, folder)
        if files is None:
            reasons.append(f"no {folder}/ files")
            continue
        try:
            found.append((label, _load_tokenizer(files, _mtimes(files))))
        except Exception as exc:  # a damaged or unfamiliar file: advise without it
            log.warning("cannot read the %s tokenizer of %s: %s", label, base, exc)
            reasons.append(f"{folder}/ unreadable")
    return found, "; ".join(reasons)


def tokenizer_files(base: str, folder: str, *, hub_cache: str | None = None) -> tuple[str, ...] | None:
    """(tokenizer.json,) or (vocab.json, merges.txt) of `folder` in the base, or None.

    The base is a preset name, a local diffusers folder or a hub id; a hub id is only looked up
    in the local Hugging Face cache (a web request never downloads).
    """
    source = base_source(base)
    if source == "builtin:tiny":
        return next((files for saved in _tiny_folders() if (files := _files_in(saved / folder))), None)
    if Path(source).expanduser().is_dir():  # a local folder, or the demo's shipped weights
        return _files_in(Path(source).expanduser() / folder)
    if looks_like_hub_id(source):
        return _files_in_hub_cache(source, folder, hub_cache)
    return None


def _files_in(folder: Path) -> tuple[str, ...] | None:
    if (folder / "tokenizer.json").is_file():
        return (str(folder / "tokenizer.json"),)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return (str(folder / "vocab.json"), str(folder / "merges.txt"))
    return None


def _files_in_hub_cache(repo: str, folder: str, cache_dir: str | None) -> tuple[str, ...] | None:
    from huggingface_hub import try_to_load_from_cache  # no torch; reads the cache folders only

    def cached(name: str) -> str | None:
        path = try_to_load_from_cache(repo, f"{folder}/{name}", cache_dir=cache_dir)
        return path if isinstance(path, str) else None  # None, or "known to be missing"

    if (single := cached("tokenizer.json")) is not None:
        return (single,)
    vocab, merges = cached("vocab.json"), cached("merges.txt")
    return (vocab, merges) if vocab and merges else None


def _tiny_folders() -> list[Path]:
    """Where the tiny base may be saved: under MODEL_CACHE_DIR, then where `tiny_base_dir()` puts
    it by default. The web process only looks; building it needs torch (the worker does)."""
    return [tiny_base_folder(settings.MODEL_CACHE_DIR), tiny_base_folder()]


def _mtimes(files: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(os.path.getmtime(name) for name in files)


@functools.lru_cache(maxsize=16)
def _load_tokenizer(files: tuple[str, ...], mtimes: tuple[float, ...]) -> Any:
    """A `tokenizers.Tokenizer` from its files, once per process (and again if they change)."""
    from tokenizers import Tokenizer

    if len(files) == 1:
        return Tokenizer.from_file(files[0])
    return clip_bpe_tokenizer(*files)


def clip_bpe_tokenizer(vocab_file: str, merges_file: str) -> Any:
    """CLIP's tokenizer from the vocab.json + merges.txt that FLUX repos ship in tokenizer/.

    CLIP lower-cases and squeezes whitespace, splits text into letter runs, single digits and
    punctuation runs, maps bytes to printable characters (byte-level), and marks the last
    piece of each word with "</w>".
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    bpe = models.BPE.from_file(vocab_file, merges_file, end_of_word_suffix="</w>", unk_token="<|endoftext|>")
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    words = Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(words, behavior="removed", invert=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return tokenizer
