"""The dataset studio in real Chromium: uploads (picker and drop), captions, trigger word, Train."""

from __future__ import annotations

import base64

import pytest

from tests.browser.conftest import screenshot, sign_up
from tests.conftest import make_image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DROP_JS = """([files]) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, { type: f.type }));
  }
  const zone = document.getElementById("dropzone");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_dataset_studio_from_photos_to_train(page, tmp_path):
    sign_up(page, "dana")
    page.fill("#id_name", "Teapot")
    page.click("text=Create dataset")
    page.wait_for_selector("#dropzone")
    dataset_url = page.url

    # Two photos through the file picker ...
    picked = []
    for n in (1, 2):
        path = tmp_path / f"teapot{n}.png"
        path.write_bytes(make_image_bytes(600, 600, color=(40 * n, 120, 90), pattern=n))
        picked.append(str(path))
    page.set_input_files("#file-input", picked)
    # ... and one photo plus one bad file dropped on the drop zone.
    dropped = [
        {"name": "teapot3.jpg", "type": "image/jpeg", "data": _b64(make_image_bytes(640, 520, color=(200, 30, 30), fmt="JPEG", pattern=4))},
        {"name": "notes.png", "type": "image/png", "data": _b64(b"this is a shopping list, not a photo")},
    ]
    page.evaluate(DROP_JS, [dropped])

    page.wait_for_function("document.querySelectorAll('#photo-grid .photo-card').length === 3")
    rejected = page.locator(".upload.rejected")
    rejected.wait_for()
    assert "notes.png" in rejected.text_content() and "not an image" in rejected.locator(".reason").text_content()
    page.wait_for_function("document.querySelectorAll('.upload progress').length === 4 && "
                           "[...document.querySelectorAll('.upload progress')].every(p => p.value === 100)")
    assert page.locator(".upload.done img.mini").count() == 3
    page.wait_for_function("[...document.querySelectorAll('#photo-grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#counter").text_content() == "0 / 3 captioned"
    screenshot(page, "05-dataset-uploaded")

    # Edit a caption: Ctrl+S saves at once; it is there after a reload.
    # (Cards arrive in upload-completion order; after a reload they are in upload order.)
    card_id = page.locator("#photo-grid .photo-card").first.get_attribute("data-id")
    card = f'#photo-grid .photo-card[data-id="{card_id}"]'
    page.fill(f"{card} textarea.caption", "a teapot on a wooden table")
    page.press(f"{card} textarea.caption", "Control+s")
    page.locator(f"{card} .save-state", has_text="saved").wait_for()
    page.goto(dataset_url)
    assert page.input_value(f"{card} textarea.caption") == "a teapot on a wooden table"
    assert page.locator("#counter").text_content() == "1 / 3 captioned"

    # Find and replace with a preview, then undo.
    page.click("#bulk summary")
    page.fill("#find", "wooden table")
    page.fill("#replace", "desk")
    page.click("#preview-replace")
    page.locator("#bulk-result", has_text="1 caption would change").wait_for()
    screenshot(page, "05-dataset-replace-preview")
    page.click("#apply-replace")
    page.locator("#bulk-result", has_text="1 caption changed").wait_for()
    assert page.input_value(f"{card} textarea.caption") == "a teapot on a desk"
    page.click("#undo")
    page.locator("#bulk-result", has_text="restored").wait_for()
    assert page.input_value(f"{card} textarea.caption") == "a teapot on a wooden table"

    # Trigger word: a common word warns; a good one is saved and put into every caption.
    page.fill("#id_trigger_word", "flower")
    page.locator("#trigger-advice", has_text="common English word").wait_for()
    page.fill("#id_trigger_word", "TPOTZX")
    page.locator("#trigger-advice", has_text="good trigger word").wait_for()
    page.click("#save-style")
    page.locator("#trigger-advice", has_text="Saved").wait_for()
    page.click("#insert-trigger")
    page.locator("#bulk-result", has_text="Trigger word added: 3 captions changed").wait_for()
    captions = page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)")
    assert all("TPOTZX" in c for c in captions), captions
    assert page.locator("#counter").text_content() == "3 / 3 captioned"
    page.locator("#health", has_text="3 / 3").wait_for()  # the health summary follows the edits
    screenshot(page, "05-dataset-captioned")

    # Train: the launch page for this dataset.
    page.click("#train")
    page.wait_for_url("**/trainings/launch/**")
    assert "Teapot" in page.text_content("h1")
    screenshot(page, "05-dataset-train-launch")


@pytest.fixture
def tiny_captioner(tmp_path, monkeypatch) -> str:
    """CAPTIONER for the studio's worker: a tiny offline Florence-2 (random words, real model)."""
    from trainer.engine.captioning import build_tiny_florence2

    folder = build_tiny_florence2(tmp_path / "tiny-florence2")
    monkeypatch.setenv("CAPTIONER", f"florence2:{folder}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(folder)


def _caption_task_registered() -> bool:
    import trainer.tasks

    return hasattr(trainer.tasks, "caption_dataset_task")


@pytest.mark.skipif(not _caption_task_registered(), reason="trainer/tasks.py does not import caption_dataset_task yet")
def test_auto_captions_fill_the_grid_live(tiny_captioner, page, tmp_path):
    # tiny_captioner comes before page so the studio's worker starts with it in its environment.
    sign_up(page, "emil")
    page.fill("#id_name", "Mugs")
    page.click("text=Create dataset")
    paths = []
    for n in (1, 2):
        path = tmp_path / f"mug{n}.png"
        path.write_bytes(make_image_bytes(520, 520, color=(30 * n, 60, 160), pattern=n))
        paths.append(str(path))
    page.set_input_files("#file-input", paths)
    page.wait_for_function("document.querySelectorAll('#photo-grid .photo-card').length === 2")
    page.fill("#id_trigger_word", "MUGZX")

    # No weights for the chosen captioner: the page says so and offers the template caption.
    page.click(".trigger summary")
    page.fill("#id_captioner", "florence2:/nowhere/at-all")
    page.click("#save-style")
    page.locator("#trigger-advice", has_text="Saved").wait_for()
    page.click("#auto-caption")
    status = page.locator("#caption-status", has_text="no captioner weights can be loaded here")
    status.wait_for(timeout=60_000)
    screenshot(page, "05-dataset-captioner-unavailable")
    status.locator("button", has_text="template").click()
    page.wait_for_function("[...document.querySelectorAll('#photo-grid textarea.caption')].every(t => t.value === 'a photo of MUGZX')")

    # The tiny captioner: captions replace the template ones live, each carrying the trigger.
    page.fill("#id_captioner", "")
    page.click("#save-style")
    page.locator("#trigger-advice", has_text="Saved").wait_for()
    page.click("#auto-caption")
    page.locator("#caption-status", has_text="Captioned 2 photos").wait_for(timeout=90_000)
    captions = page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)")
    assert all("MUGZX" in c and c != "a photo of MUGZX" for c in captions), captions
    assert page.locator("#counter").text_content() == "2 / 2 captioned"
    screenshot(page, "05-dataset-auto-captioned")


def _dataset_with_photos(username: str, captions: list[str], trigger: str = "") -> str:
    """A dataset of the signed-up user with one photo per caption, made through the services."""
    from django.contrib.auth import get_user_model

    from trainer.datasets import dataset_create
    from trainer.models import CaptionSource
    from trainer.photos import photo_ingest

    dataset = dataset_create(owner=get_user_model().objects.get(username=username), name="Plants")
    dataset.trigger_word = trigger
    dataset.save()
    for n, caption in enumerate(captions, start=1):
        photo = photo_ingest(dataset=dataset, data=make_image_bytes(520, 520, color=(20 * n, 150, 60), pattern=n),
                             name=f"plant{n}.png")
        if caption:
            photo.caption, photo.caption_source = caption, CaptionSource.USER
            photo.save()
    return dataset.get_absolute_url()


def test_keyboard_tab_reaches_the_buttons_and_alt_arrows_move_between_captions(page):
    sign_up(page, "kira")
    page.goto(_dataset_with_photos("kira", ["a fern", "a cactus", ""]))
    boxes = page.locator("#photo-grid textarea.caption")
    boxes.nth(0).focus()
    page.keyboard.press("Tab")  # native Tab: on to this photo's Exclude button, not the next caption
    assert page.evaluate("document.activeElement.textContent.trim()") == "Exclude"
    page.keyboard.press("Enter")
    page.locator("#photo-grid .photo-card").nth(0).locator(".toggle-exclude", has_text="Include").wait_for()
    boxes.nth(0).focus()
    page.keyboard.press("Alt+ArrowDown")
    assert page.evaluate("document.activeElement.value") == "a cactus"
    page.keyboard.press("Alt+ArrowDown")
    page.keyboard.press("Alt+ArrowUp")
    assert page.evaluate("document.activeElement.value") == "a cactus"
    assert "Alt" in page.text_content("#keyboard-help")
