"""Trigger word advice: characters and length block; common words and familiar pieces warn."""

import pytest

from trainer.forms import familiar_pieces, trigger_advice


@pytest.mark.parametrize("word", ["JELLOMOLD", "zxq_mira", "k9-unit", "ab"])
def test_valid_words(word):
    assert trigger_advice(word).ok


@pytest.mark.parametrize("word", ["a", "two words", "émile", "x" * 41, "sks!"])
def test_invalid_words(word):
    advice = trigger_advice(word)
    assert not advice.ok and "letters, digits" in advice.errors[0]


def test_common_word_warns():
    assert "common English word" in trigger_advice("Dog").warnings[0]


def test_familiar_pieces_warn():
    assert familiar_pieces("redcat") == ["red", "cat"]
    assert familiar_pieces("sunflower") == ["sun", "flower"]
    assert familiar_pieces("JELLOMOLD") == []
    assert "red + cat" in trigger_advice("RedCat").warnings[0]
    assert trigger_advice("JELLOMOLD").warnings == []


def test_empty_word_advises_setting_one():
    advice = trigger_advice("")
    assert advice.ok and "No trigger word" in advice.warnings[0]
