"""Tiny offline captioners: real architectures, random weights, tokenizers built in code.

Each builder writes a complete folder (config, safetensors weights, tokenizer, processor,
generation config) that `load_captioner("<kind>:<folder>")` loads through the same
`from_pretrained` path as a hub checkpoint. They exist so tests, the CPU demo and the
benchmark exercise the whole captioning path without a network. Their captions are random
words: the weights are untrained. The generation config asks for at least a few tokens and
bans special tokens so every caption has text to style.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Caption-like words so random output reads like word salad rather than bytes.
_WORDS = (
    "a an the cat dog man woman child person car house tree flower table chair sofa window "
    "street park beach mountain sky cloud water river field grass forest city room kitchen "
    "red blue green yellow white black brown orange small large old young bright dark soft "
    "sitting standing lying walking running looking holding wearing on in at with of and near "
    "under behind front photo light sunset morning night wooden stone glass metal"
).split()
_IMAGE_SIZE = 32  # pixels; tiny so a forward pass takes milliseconds on a CPU
_GENERATION = {"max_new_tokens": 12, "min_new_tokens": 4}


def build_tiny_florence2(folder: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Save a ~0.2 MB Florence-2 (DaViT vision tower + BART) with its processor to `folder`."""
    from transformers import (
        Florence2Config, Florence2ForConditionalGeneration, Florence2Processor, GenerationConfig,
        RobertaTokenizer,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(folder)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]
    vocab, merges = _byte_bpe_vocab(specials, _WORDS)
    # Florence-2 uses BART's byte-level BPE tokenizer, which in transformers 5 is RoBERTa's.
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, image_token="<image>")
    # Two DaViT stages of stride 4 and 2 turn 32 px into a 4x4 grid: 16 image tokens, plus
    # one for the temporal embedding the projector appends.
    image_tokens = (_IMAGE_SIZE // 8) ** 2 + 1
    image_processor = CLIPImageProcessorPil(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}, do_center_crop=False,
        image_seq_length=image_tokens,
    )
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        post_processor_config={"pure_text": {}},
    )
    text = dict(
        model_type="bart", vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=0,
    )
    vision = dict(
        depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
        patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2],
        window_size=4, projection_dim=32, drop_path_rate=0.0,
    )
    config = Florence2Config(text_config=text, vision_config=vision,
                             image_token_id=vocab["<image>"])
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    _amplify(model, std=0.4)
    banned = [[vocab[token]] for token in specials if token != "</s>"]
    model.generation_config = GenerationConfig(
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
        bad_words_ids=banned, **_GENERATION,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_blip(folder: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Save a ~0.1 MB BLIP captioner (ViT + BERT decoder) with its processor to `folder`."""
    from transformers import (
        BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor, GenerationConfig,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(folder)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokens = specials + list(dict.fromkeys([*_WORDS, *"abcdefghijklmnopqrstuvwxyz.,"]))
    vocab = {token: index for index, token in enumerate(tokens)}
    # BLIP starts captions with [DEC] (its BOS) and ends them with [SEP].
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    image_processor = BlipImageProcessorPil(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = dict(
        vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
        bos_token_id=vocab["[DEC]"], pad_token_id=0, sep_token_id=vocab["[SEP]"],
        eos_token_id=vocab["[SEP]"],
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=_IMAGE_SIZE, patch_size=8)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    _amplify(model, std=0.2)
    banned = [[vocab[token]] for token in specials if token != "[SEP]"]
    model.generation_config = GenerationConfig(
        bos_token_id=vocab["[DEC]"], pad_token_id=0, eos_token_id=vocab["[SEP]"],
        bad_words_ids=banned, **_GENERATION,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_smolvlm(folder: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Save a tiny SmolVLM (Idefics3: SigLIP-style ViT + Llama) with a chat template.

    SmolVLM v1 checkpoints use the Idefics3 classes, whose processor needs no torchvision, so
    this exercises the instruction-following `vlm` path (chat template, left padding).
    """
    from transformers import (
        GenerationConfig, GPT2Tokenizer, Idefics3Config, Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    out = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>",
                "<fake_token_around_image>", "<image>", "<global-img>"]
    vocab, merges = _byte_bpe_vocab(specials, _WORDS)
    tokenizer = GPT2Tokenizer(
        vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
        extra_special_tokens=specials[3:],
    )
    # No tiling: one 32 px global image -> 16 patches of 8 px -> 4 tokens after the 2x
    # pixel-shuffle (scale_factor) that Idefics3's connector applies.
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": _IMAGE_SIZE}, max_image_size={"longest_edge": _IMAGE_SIZE},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=4, chat_template=_SMOLVLM_CHAT_TEMPLATE)
    text = dict(
        model_type="llama", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=256, bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<end_of_utterance>"], pad_token_id=0,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=_IMAGE_SIZE, patch_size=8)
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=2,
                            image_token_id=vocab["<image>"], pad_token_id=0)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    _amplify(model, std=0.2)
    banned = [[vocab[token]] for token in specials if token != "<end_of_utterance>"]
    model.generation_config = GenerationConfig(
        bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<end_of_utterance>"],
        pad_token_id=0, bad_words_ids=banned, **_GENERATION,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# SmolVLM's conversation format: "<|im_start|>User:<image>prompt<end_of_utterance>\nAssistant:"
_SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _amplify(model: torch.nn.Module, *, std: float) -> None:
    """Redraw weight matrices with a large spread so each image steers its caption.

    With the usual 0.02 init the image signal is lost in the noise and every photo gets the
    same words, which would hide a batching bug that mixes captions up.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, std)


def _byte_bpe_vocab(
    specials: list[str], words: tuple[str, ...] | list[str]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary: specials, printable ASCII, and merges spelling `words`.

    Byte-level BPE writes a space as "Ġ" (GPT-2's printable stand-in for byte 0x20); each word
    is merged letter by letter, with and without its leading space, so it becomes one token.
    """
    space = "\u0120"
    vocab = {token: index for index, token in enumerate(specials)}
    for char in [space, *map(chr, range(0x21, 0x7F))]:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        for spelled in (word, space + word):
            piece = spelled[0]
            for char in spelled[1:]:
                merged = piece + char
                if merged not in vocab:
                    merges.append((piece, char))
                    vocab[merged] = len(vocab)
                piece = merged
    return vocab, merges
