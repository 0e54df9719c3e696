"""Captions per second, end to end (open photo, batch, generate, decode, style).

    python bench/caption_speed.py                                # tiny offline models (+ see below)
    python bench/caption_speed.py --model florence2 --device cuda    # real weights, if cached
    python bench/caption_speed.py --arch-only florence2-large --device cuda

With no --model or --arch-only it times the tiny models and, when a CUDA GPU is visible, the
default captioner's architecture (florence2-large, random weights) on it too (--no-arch skips
that). --arch-only builds the real Florence-2 architecture from its config with random weights (no
download): it times exactly what the default captioner costs on this GPU. Random weights never
emit EOS, so every caption runs the full --max-new-tokens, a pessimistic but fixed length
(a real <MORE_DETAILED_CAPTION> is ~60-120 tokens). Its tokenizer is the tiny one; the vocabulary
size, image size (768 px, 577 image tokens) and every layer are Florence-2's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.engine.captioning import (  # noqa: E402
    CaptionerUnavailable, CaptionStyle, build_tiny_blip, build_tiny_florence2,
    build_tiny_smolvlm, caption_images, load_captioner, unload_captioners,
)
from trainer.engine.captioning.backends import Captioner, LoadedModel  # noqa: E402
from trainer.engine.captioning.loading import dtype_for, resolve_device  # noqa: E402

TINY_BUILDERS = {"florence2": build_tiny_florence2, "blip": build_tiny_blip,
                 "smolvlm": build_tiny_smolvlm}
# Florence-2 sizes (DaViT vision tower + BART), from the published checkpoints' configs.
FLORENCE2_ARCHS = {
    "florence2-base": dict(embed_dim=[128, 256, 512, 1024], heads=[4, 8, 16, 32], proj=768,
                           d_model=768, layers=6, text_heads=12, ffn=3072),
    "florence2-large": dict(embed_dim=[256, 512, 1024, 2048], heads=[8, 16, 32, 64], proj=1024,
                            d_model=1024, layers=12, text_heads=16, ffn=4096),
}

# The architecture of the studio's default captioner (trainer.engine.captioning DEFAULT_CAPTIONER).
DEFAULT_ARCH = "florence2-large"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a captioner spec with real weights (preset, kind:path)")
    parser.add_argument("--arch-only", choices=sorted(FLORENCE2_ARCHS),
                        help="time a real-size Florence-2 built from its config, random weights")
    parser.add_argument("--no-arch", action="store_true",
                        help="with the tiny models, skip the florence2-large timing on a CUDA GPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=512, help="side of the test photos")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default; 1 is fastest for tiny)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        photos = _make_photos(Path(tmp) / "photos", args.images, args.image_size)
        for name, captioner in _captioners(args, Path(tmp)):
            for batch_size in batch_sizes:
                _time(name, captioner, photos, batch_size)
            unload_captioners()


def _captioners(args: argparse.Namespace, tmp: Path):
    """(name, Captioner) pairs for the chosen mode."""
    if args.model:
        try:
            yield args.model, load_captioner(args.model, args.device,
                                             max_new_tokens=args.max_new_tokens)
        except CaptionerUnavailable as exc:
            print(f"skipped: {exc}")
        return
    if args.arch_only:
        yield f"{args.arch_only} (random weights)", _florence2_architecture(
            args.arch_only, args.device, args.max_new_tokens or 96, tmp)
        return
    for kind, build in TINY_BUILDERS.items():
        folder = build(tmp / f"tiny-{kind}")
        spec = f"{kind}:{folder}"
        yield f"tiny {kind}", load_captioner(spec, args.device, max_new_tokens=args.max_new_tokens)
    if torch.cuda.is_available() and not args.no_arch:
        # What the studio's default captioner costs on this GPU, without downloading it.
        yield f"{DEFAULT_ARCH} (random weights)", _florence2_architecture(
            DEFAULT_ARCH, "cuda", args.max_new_tokens or 96, tmp)
    else:
        print(f"{DEFAULT_ARCH}: skipped ({'--no-arch' if args.no_arch else 'no CUDA GPU visible'})")


def _florence2_architecture(name: str, device: str, new_tokens: int, tmp: Path) -> Captioner:
    """Florence-2 at full size with random weights, and a processor that feeds it 768 px."""
    from transformers import Florence2Config, Florence2ForConditionalGeneration
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    arch = FLORENCE2_ARCHS[name]
    # The tiny folder supplies a working tokenizer; the vocabulary size below is the real one.
    tiny = load_captioner(f"florence2:{build_tiny_florence2(tmp / 'tokenizer')}", "cpu")
    processor = tiny._require().processor
    processor.image_processor = CLIPImageProcessorPil(
        size={"height": 768, "width": 768}, do_center_crop=False, image_seq_length=577)
    processor.num_image_tokens = 577  # (768 / 32)^2 spatial tokens + 1 temporal
    vision = dict(depths=[1, 1, 9, 1], embed_dim=arch["embed_dim"], num_heads=arch["heads"],
                  num_groups=arch["heads"], window_size=12, projection_dim=arch["proj"])
    text = dict(model_type="bart", vocab_size=51289, d_model=arch["d_model"],
                encoder_layers=arch["layers"], decoder_layers=arch["layers"],
                encoder_attention_heads=arch["text_heads"],
                decoder_attention_heads=arch["text_heads"], encoder_ffn_dim=arch["ffn"],
                decoder_ffn_dim=arch["ffn"], max_position_embeddings=1024)
    config = Florence2Config(text_config=text, vision_config=vision,
                             image_token_id=processor.image_token_id)
    torch_device = resolve_device(device)
    dtype = dtype_for(torch_device)
    with torch.device(torch_device):  # build on the GPU directly: faster than CPU init
        model = Florence2ForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.min_new_tokens = new_tokens  # fixed caption length, see docstring
    loaded = LoadedModel("florence2", name, model, processor, torch_device, dtype)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name}: {params:.0f}M parameters, {dtype}, {torch_device}, {new_tokens} tokens/caption")
    return Captioner(loaded, spec=name, max_new_tokens=new_tokens)


def _time(name: str, captioner: Captioner, photos: list[Path], batch_size: int) -> None:
    style = CaptionStyle(trigger="JELLOMOLD")
    caption_images(captioner, photos[:batch_size], batch_size=batch_size, style=style)  # warm up
    _sync()
    start = time.perf_counter()
    results = caption_images(captioner, photos, batch_size=batch_size, style=style)
    _sync()
    seconds = time.perf_counter() - start
    failed = sum(not result.ok for result in results)
    print(f"{name:32s} {str(captioner.device):6s} batch {batch_size:3d}: {len(photos)} photos in "
          f"{seconds:6.2f} s = {len(photos) / seconds:7.1f} captions/s"
          + (f" ({failed} failed)" if failed else ""))
    print(f"    e.g. {results[0].caption[:100]!r}")


def _make_photos(folder: Path, count: int, side: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 255, (side, side * 3 // 4, 3), dtype=np.uint8)
        path = folder / f"photo_{index:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
