"""Trigger word advice: characters block; common words, known tokens and familiar splits warn.

The splits come from the base model's own tokenizer files, read with the `tokenizers` package:
the shipped demo base, a CLIP-style BPE made here from small vocab.json/merges.txt files (as
FLUX repositories ship in tokenizer/), in a local folder and in the Hugging Face cache, and the
tiny base once it has been saved; the word list is the fallback when none are on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers

from trainer import trigger_words
from trainer.engine.demo import WEIGHTS_DIR
from trainer.trigger_words import familiar_pieces, trigger_advice

WORDS = ("jello", "mold", "red", "cat")


@pytest.fixture
def no_tiny_base(tmp_path, settings, monkeypatch) -> Path:
    """No saved tiny base anywhere this process looks (nor a hub cache)."""
    settings.MODEL_CACHE_DIR = tmp_path / "models"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLUX_STUDIO_CACHE", raising=False)
    return settings.MODEL_CACHE_DIR


def write_clip_bpe(folder: Path, words: tuple[str, ...] = WORDS) -> Path:
    """A CLIP-style byte-level BPE (vocab.json + merges.txt) that spells `words` as whole words
    ("red</w>") and as the start of longer ones ("red"), every other letter on its own."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in pre_tokenizers.ByteLevel.alphabet():
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    merges = []
    for word in words:
        for last in (word[-1], word[-1] + "</w>"):
            piece = word[0]
            for char in [*word[1:-1], last]:
                if piece + char not in vocab:
                    merges.append(f"{piece} {char}")
                    vocab[piece + char] = len(vocab)
                piece += char
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def flux_like_folder(root: Path) -> Path:
    """tokenizer/ as CLIP BPE files, tokenizer_2/ as a tokenizer.json (the demo's T5)."""
    write_clip_bpe(root / "tokenizer")
    (root / "tokenizer_2").mkdir()
    shutil.copy(WEIGHTS_DIR / "tokenizer_2" / "tokenizer.json", root / "tokenizer_2" / "tokenizer.json")
    return root


@pytest.mark.parametrize("word", ["JELLOMOLD", "zxq_mira", "k9-unit", "ab"])
def test_valid_words(word):
    assert trigger_advice(word).ok


@pytest.mark.parametrize("word", ["a", "two words", "émile", "x" * 41, "sks!"])
def test_invalid_words(word):
    advice = trigger_advice(word)
    assert not advice.ok and "letters, digits" in advice.errors[0]


def test_common_word_warns():
    assert "common English word" in trigger_advice("Dog").warnings[0]
    assert "JELLOMOLD" not in trigger_advice("Dog").warnings[0], "the hint under the field already gives examples"


def test_demo_base_tokenizers_report_each_split_and_warn_on_known_tokens():
    red = trigger_advice("red", base="demo")
    assert [(s.tokenizer, s.pieces) for s in red.splits] == [("CLIP", ["red"]), ("T5", ["red"])]
    assert any("single token the CLIP and T5 tokenizers already know" in w for w in red.warnings)
    circle = trigger_advice("bluesquare", base="demo")
    clip, t5 = circle.splits
    assert clip.pieces == ["blu", "e", "square"] and clip.familiar == ["square"]
    assert t5.pieces == ["blue", "s", "q", "u", "a", "r", "e"]
    assert any("splits into familiar tokens (CLIP: blu + e + square)" in w for w in circle.warnings)
    made_up = trigger_advice("ZXQMIRA", base="demo")
    assert made_up.warnings == [] and [s.count for s in made_up.splits] == [7, 7]
    assert made_up.notes[0] == "CLIP tokenizer of the demo base: 7 pieces (z · x · q · m · i · r · a)."


def test_a_word_taking_most_of_a_short_caption_budget_warns():
    """The demo base reads 16 T5 tokens per caption: a 9-piece word (and the end token) leaves 6."""
    long_word = trigger_advice("JELLOMOLD", base="demo")
    assert [s.count for s in long_word.splits] == [9, 9]
    assert any("takes 9 of the 16 T5 tokens a caption gets on the demo base" in w and "the 6 left are cut" in w
               for w in long_word.warnings), long_word.warnings
    assert not any("T5 tokens a caption gets" in w for w in trigger_advice("JELLOMOLD", base="flux-dev").warnings)
    too_long = trigger_advice("QWERTYZXCVBNMPLKJ", base="demo")  # 17 pieces: more than the whole caption
    assert any("captions would hold nothing else" in w for w in too_long.warnings), too_long.warnings


def test_clip_bpe_from_vocab_and_merges_in_a_local_base_folder(tmp_path, settings):
    base = str(flux_like_folder(tmp_path / "my-flux"))
    settings.BASE_MODELS = [*settings.BASE_MODELS, base]
    advice = trigger_advice("JelloMold", base=base)
    clip = advice.splits[0]
    assert (clip.tokenizer, clip.pieces, clip.familiar) == ("CLIP", ["jello", "mold"], ["jello", "mold"])
    assert any("familiar tokens (CLIP: jello + mold)" in w for w in advice.warnings)
    assert any("single token the CLIP tokenizer already knows" in w for w in trigger_advice("cat", base=base).warnings)
    assert trigger_advice("zxqmira", base=base).splits[0].count == 7


def test_a_hub_base_is_read_from_the_hugging_face_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    missing = trigger_advice("redcat", base="flux-dev")
    assert missing.splits == [] and "not on this machine" in missing.notes[0]
    assert any("familiar pieces (red + cat)" in w for w in missing.warnings)  # the word-list fallback

    repo = cache / "models--black-forest-labs--FLUX.1-dev"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    flux_like_folder(repo / "snapshots" / "0123abc")
    found = trigger_advice("redcat", base="flux-dev")
    assert [(s.tokenizer, s.pieces) for s in found.splits][0] == ("CLIP", ["red", "cat"])
    assert any("familiar tokens (CLIP: red + cat)" in w for w in found.warnings)


@pytest.mark.parametrize("saved_in", ["MODEL_CACHE_DIR", "FLUX_STUDIO_CACHE"])
def test_tiny_base_uses_its_saved_tokenizers_or_says_it_fell_back(no_tiny_base, monkeypatch, tmp_path, saved_in):
    fallback = trigger_advice("RedCat", base="tiny")
    assert fallback.splits == [] and "tiny base's tokenizers are not on this machine" in fallback.notes[0]
    assert "familiar pieces (red + cat)" in fallback.warnings[0]

    from trainer.engine import tiny

    def save_tokenizers_only(folder: Path) -> Path:  # the real folder name and layout, minus the weights
        tiny.build_clip_tokenizer().save_pretrained(Path(folder) / "tokenizer")
        tiny.build_t5_tokenizer().save_pretrained(Path(folder) / "tokenizer_2")
        (Path(folder) / "model_index.json").write_text("{}")
        return Path(folder)

    monkeypatch.setattr(tiny, "save_tiny_pipeline", save_tokenizers_only)
    if saved_in == "MODEL_CACHE_DIR":
        tiny.tiny_base_dir(no_tiny_base)
    else:  # where the engine saves it by default, wherever that folder's name says
        monkeypatch.setenv("FLUX_STUDIO_CACHE", str(tmp_path / "cache"))
        tiny.tiny_base_dir()
    saved = trigger_advice("RedCat", base="tiny")
    assert [(s.tokenizer, s.pieces) for s in saved.splits] == [("CLIP", list("redcat")), ("T5", list("RedCat"))]
    assert saved.warnings == []  # character-level tokenizers: every word is new to the tiny base


def test_tokenizers_are_loaded_once_per_process():
    trigger_advice("ZXQMIRA", base="demo")
    before = trigger_words._load_tokenizer.cache_info()
    trigger_advice("VORPLEX", base="demo")
    after = trigger_words._load_tokenizer.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2


def test_familiar_pieces_word_list():
    assert familiar_pieces("redcat") == ["red", "cat"]
    assert familiar_pieces("sunflower") == ["sun", "flower"]
    assert familiar_pieces("JELLOMOLD") == []


def test_empty_word_advises_setting_one():
    advice = trigger_advice("")
    assert advice.ok and "No trigger word" in advice.warnings[0]
