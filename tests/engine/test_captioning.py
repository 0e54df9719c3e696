"""Captioning engine: tiny real models through the real loader, styling rules, failures.

The tiny Florence-2 and BLIP folders are built once per session from configs (random weights,
tokenizers made in code) and loaded with `load_captioner` exactly as a hub checkpoint would be,
so these tests cover loading, batching, generation, decoding and styling without a network.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import try_to_load_from_cache
from PIL import Image

from trainer.engine.captioning import loading
from trainer.engine.captioning import (
    CAPTIONER_PRESETS, DEFAULT_VLM_PROMPT, CaptionerUnavailable, CaptionResult, CaptionStyle, build_tiny_blip,
    build_tiny_florence2, build_tiny_smolvlm, caption_images, clean_caption, load_captioner, load_image,
    resolve_spec, style_caption, template_caption, unload_captioners,
)

TRIGGER = "JELLOMOLD"
KINDS = ("florence2", "blip", "vlm")


def _count(text: str, word: str = TRIGGER) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE))


@pytest.fixture(autouse=True)
def _media_in_tmp() -> None:
    """Shadows the project conftest's Django-settings fixture: this engine test has no Django
    (it runs with `-p no:django`, where pytest-django's `settings` fixture does not exist)."""


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run ~20x faster on one thread on a busy 2-core box (no spin contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captioners")
    return {
        "florence2": build_tiny_florence2(root / "florence2"),
        "blip": build_tiny_blip(root / "blip"),
        "vlm": build_tiny_smolvlm(root / "smolvlm"),
    }


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Seven readable photos of different sizes and modes (one rotated by EXIF, one RGBA)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(5):
        pixels = rng.integers(0, 255, (30 + 7 * index, 48, 3), dtype=np.uint8)
        path = folder / f"photo_{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    rotated = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(rotated, exif=exif)
    rgba = folder / "transparent.png"
    Image.fromarray(rng.integers(0, 255, (36, 36, 4), dtype=np.uint8), "RGBA").save(rgba)
    return [*paths, rotated, rgba]


@pytest.fixture(scope="session")
def broken_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("broken") / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


@pytest.fixture(params=KINDS)
def captioner(request: pytest.FixtureRequest, tiny_folders: dict[str, Path]):
    return load_captioner(f"{request.param}:{tiny_folders[request.param]}", device="cpu")


# --- the real path: load, batch, generate, decode, style ---------------------------------


def test_tiny_captioners_caption_a_folder_in_batches(captioner, photos: list[Path]) -> None:
    streamed: list[CaptionResult] = []
    style = CaptionStyle(trigger=TRIGGER, placement="prefix")
    results = caption_images(captioner, photos, batch_size=3, style=style,
                             on_caption=streamed.append)
    assert [result.path for result in results] == photos
    assert streamed == results  # each result was reported as it was produced
    for result in results:
        assert result.error is None and result.raw
        assert result.caption.startswith(f"{TRIGGER}, ") and result.caption.endswith(".")
        assert _count(result.caption) == 1
    assert len({result.raw for result in results}) > 1  # captions depend on the image


def test_batched_and_one_by_one_give_the_same_captions(captioner, photos: list[Path]) -> None:
    style = CaptionStyle(trigger=TRIGGER)
    batched = caption_images(captioner, photos, batch_size=4, style=style)
    single = caption_images(captioner, photos, batch_size=1, style=style)
    assert [r.caption for r in batched] == [r.caption for r in single]


@pytest.mark.parametrize("placement", ["prefix", "suffix", "replace"])
def test_prefix_and_suffix_on_every_caption(
    captioner, photos: list[Path], placement: str
) -> None:
    style = CaptionStyle(trigger=TRIGGER, placement=placement, prefix="photo style",
                         suffix="film grain")
    results = caption_images(captioner, photos[:4], batch_size=2, style=style)
    for result in results:
        assert result.caption.startswith("photo style, ")
        assert result.caption.endswith(", film grain.")
        assert _count(result.caption) == 1
    if placement == "suffix":
        assert all(r.caption.endswith(f", {TRIGGER}, film grain.") for r in results)


def test_broken_image_is_reported_and_the_rest_captioned(
    captioner, photos: list[Path], broken_photo: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.png"
    paths = [photos[0], broken_photo, photos[1], missing, photos[2]]
    results = caption_images(captioner, paths, batch_size=5, style=CaptionStyle(trigger=TRIGGER))
    assert [r.path for r in results] == paths
    assert "not a readable image" in (results[1].error or "")
    assert "not found" in (results[3].error or "")
    assert results[1].caption == results[3].caption == ""
    for result in (results[0], results[2], results[4]):
        assert result.ok and _count(result.caption) == 1


def test_failing_batch_falls_back_to_one_by_one(tiny_folders, photos, monkeypatch) -> None:
    captioner = load_captioner(f"blip:{tiny_folders['blip']}", device="cpu")
    real = captioner.caption_batch
    poison_size = load_image(photos[2]).size

    def fails_on_poison(images):  # the model path stays real for every other image
        if any(image.size == poison_size for image in images):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real(images)

    monkeypatch.setattr(captioner, "caption_batch", fails_on_poison)
    results = caption_images(captioner, photos[:4], batch_size=4)
    assert [r.ok for r in results] == [True, True, False, True]
    assert "device-side assert" in (results[2].error or "")
    expected = caption_images(load_captioner(f"blip:{tiny_folders['blip']}"), [photos[0]])
    assert results[0].caption == expected[0].caption


def test_should_stop_ends_between_batches(captioner, photos: list[Path]) -> None:
    done: list[CaptionResult] = []
    results = caption_images(captioner, photos, batch_size=2, on_caption=done.append,
                             should_stop=lambda: len(done) >= 2)
    assert len(results) == 2


def test_images_are_upright_rgb(photos: list[Path]) -> None:
    rotated = load_image(photos[5])
    assert rotated.size == (20, 40) and rotated.mode == "RGB"
    assert load_image(photos[6]).mode == "RGB"


# --- loading, caching, unavailable weights ------------------------------------------------


def test_loaded_once_and_unloaded(tiny_folders) -> None:
    spec = f"florence2:{tiny_folders['florence2']}"
    first, second = load_captioner(spec, device="cpu"), load_captioner(spec, prompt="<CAPTION>")
    assert first._loaded is second._loaded and second.prompt == "<CAPTION>"
    assert load_captioner(str(tiny_folders["florence2"])).kind == "florence2"  # read from config
    first.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        first.caption_batch([Image.new("RGB", (8, 8))])
    with pytest.raises(RuntimeError, match="unloaded"):  # it shared the freed model
        second.caption_batch([Image.new("RGB", (8, 8))])
    third = load_captioner(spec)  # loads again after unload
    assert third.caption_batch([Image.new("RGB", (8, 8))])
    assert unload_captioners() >= 1
    with pytest.raises(RuntimeError, match="unloaded"):
        third.caption_batch([Image.new("RGB", (8, 8))])


def test_missing_local_folder_raises_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptionerUnavailable, match="no model folder") as info:
        load_captioner(f"florence2:{tmp_path / 'nope'}")
    assert isinstance(info.value, ValueError)
    assert "template caption" in str(info.value)


def test_folder_without_model_raises_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptionerUnavailable, match="does not hold a loadable model"):
        load_captioner(f"blip:{tmp_path}")


@pytest.mark.parametrize("spec", ["florence2", "blip:flux-studio-tests/no-such-captioner"])
def test_hub_id_offline_raises_clear_error(monkeypatch, spec: str) -> None:
    kind, source = resolve_spec(spec)
    if try_to_load_from_cache(source, "config.json"):
        pytest.skip(f"{source} is in this machine's Hub cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CaptionerUnavailable, match="offline") as info:
        load_captioner(spec)
    assert f"hf download {source}" in str(info.value)


def test_unreachable_hub_fails_fast(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(CaptionerUnavailable, match="cannot be reached"):
        load_captioner("vlm:flux-studio-tests/no-such-captioner")


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (OSError("You are trying to access a gated repo. Access to model x is restricted."),
         "gated"),
        (OSError("x is not a local folder and is not a valid model identifier"), "no model"),
        (ImportError("needs the timm library"), "library it needs is missing"),
    ],
)
def test_loading_errors_are_explained(monkeypatch, error: Exception, says: str) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    explained = loading._explain("spec", "org/model", error)
    assert isinstance(explained, CaptionerUnavailable) and says in str(explained)


def test_wrong_kind_raises_clear_error(tiny_folders) -> None:
    with pytest.raises(CaptionerUnavailable, match="not a florence2 one"):
        load_captioner(f"florence2:{tiny_folders['blip']}")


def test_spec_resolution() -> None:
    assert resolve_spec("blip") == ("blip", "Salesforce/blip-image-captioning-large")
    assert resolve_spec("florence2")[1].endswith("Florence-2-large")
    assert resolve_spec("smolvlm")[0] == resolve_spec("qwen2.5-vl")[0] == "vlm"
    assert resolve_spec("vlm:/models/my vlm") == ("vlm", "/models/my vlm")
    assert resolve_spec("org/model") == (None, "org/model")
    with pytest.raises(CaptionerUnavailable):
        resolve_spec("blip:")


def test_vlm_prompt_is_editable(tiny_folders, photos: list[Path]) -> None:
    spec = f"smolvlm:{tiny_folders['vlm']}"
    default, custom = load_captioner(spec), load_captioner(spec, prompt="Describe the cat.")
    assert default.prompt == DEFAULT_VLM_PROMPT and custom.prompt == "Describe the cat."
    images = [load_image(path) for path in photos[:3]]
    assert all(custom.caption_batch(images))  # the edited prompt goes through the template


# --- styling (pure functions) -------------------------------------------------------------


def test_clean_caption_strips_tokens_and_boilerplate() -> None:
    raw = "</s><s><MORE_DETAILED_CAPTION>The image shows  a cat sitting on a sofa .  </s><pad>"
    assert clean_caption(raw) == "A cat sitting on a sofa."
    assert clean_caption("arafed man in a hat") == "Man in a hat."
    assert clean_caption("In this image, a dog runs") == "A dog runs."
    assert clean_caption("<pad></s>") == ""


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        ("prefix", "JELLOMOLD, a cat sitting on a sofa."),
        ("suffix", "A cat sitting on a sofa, JELLOMOLD."),
        ("replace", "JELLOMOLD sitting on a sofa."),
    ],
)
def test_trigger_placement(placement: str, expected: str) -> None:
    raw = "The image shows a cat sitting on a sofa"
    assert style_caption(raw, trigger=TRIGGER, placement=placement) == expected


def test_replace_heuristic_and_fallback() -> None:
    def replace(raw: str) -> str:
        return style_caption(raw, trigger=TRIGGER, placement="replace")

    assert replace("a close-up of a fluffy orange cat with green eyes") == (
        "A close-up of JELLOMOLD with green eyes.")
    assert replace("there is a dog in the park") == "There is JELLOMOLD in the park."
    # No subject with a determiner before a verb or preposition: fall back to prefix.
    assert replace("man wearing a hat") == "JELLOMOLD, Man wearing a hat."
    assert replace("sunset over the mountains") == "JELLOMOLD, Sunset over the mountains."


def test_trigger_never_doubled_and_affixes_always_applied() -> None:
    style = dict(trigger=TRIGGER, prefix="photo style", suffix="film grain")
    already = style_caption("a jellomold cat on a table", placement="prefix", **style)
    assert already == "photo style, a JELLOMOLD cat on a table, film grain."
    for placement in ("prefix", "suffix", "replace"):
        for raw in ("a cat on a table", "JELLOMOLD on a table", "", "a photo of jellomold"):
            caption = style_caption(raw, placement=placement, **style)
            assert caption.startswith("photo style, ") and caption.endswith(", film grain.")
            assert _count(caption) == 1, caption
            again = style_caption(caption, placement=placement, **style)
            assert again == caption  # idempotent: re-styling never stacks anything
    in_prefix = style_caption("a cat", trigger=TRIGGER, prefix=f"photo of {TRIGGER}")
    assert in_prefix == f"photo of {TRIGGER}, a cat."


def test_template_caption() -> None:
    assert template_caption(TRIGGER) == "a photo of JELLOMOLD."
    assert template_caption(TRIGGER, prefix="photo style", suffix="film grain") == (
        "photo style, a photo of JELLOMOLD, film grain.")
    assert template_caption(TRIGGER, template="{trigger} in the snow") == "JELLOMOLD in the snow."
    with pytest.raises(ValueError):
        template_caption(TRIGGER, template="no placeholder")
    with pytest.raises(ValueError, match="placement"):
        CaptionStyle(trigger=TRIGGER, placement="middle")  # type: ignore[arg-type]


def test_what_an_edited_prompt_means_for_each_family() -> None:
    from trainer.engine.captioning import prompt_for_kind

    assert prompt_for_kind("vlm", "  Describe   the cat. ") == "Describe the cat."
    assert prompt_for_kind("florence2", "<DETAILED_CAPTION>") == "<DETAILED_CAPTION>"
    assert prompt_for_kind("florence2", "Describe the cat.") is None  # not instruction-following: its default task
    assert prompt_for_kind("blip", "Describe the cat.") is None  # would only derail it
    assert prompt_for_kind("vlm", "   ") is None


def test_presets_prompts_and_styling_import_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; from trainer.engine.captioning import CAPTIONER_PRESETS, DEFAULT_VLM_PROMPT, style_caption; "
            "from trainer.engine.captioning.style import replace_subject; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
