"""The whole journey in Chromium, as a new user walks it (issue 8).

Sign up, drop photos of a pet into the dataset studio, edit captions, pick a trigger word, train
the tiny base for a few steps while watching it live, generate with the trigger word, publish with
that image as the cover; then an anonymous visitor finds the model by search, downloads the LoRA
and clicks "Try it". A screenshot at each step lands in artifacts/screenshots/08-journey-*.png,
including one taken while the training runs and one of the finished download.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from safetensors import safe_open

from tests.browser.conftest import ARTIFACTS, screenshot, sign_up, wait_for_js
from tests.browser.test_dataset_studio import DROP_JS, create_dataset
from trainer.models import TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRIGGER = "zqxpet"
# Enough steps (about 0.1 s each on a CPU) that the page can be caught mid-training for its screenshot.
STEPS, SAMPLE_EVERY = 60, 30
# (fur, background, eye) colours and where the cat sits: four different photos of "the pet".
CATS = [((230, 140, 40), (40, 70, 160), (60, 200, 60), (130, 150)),
        ((40, 40, 40), (220, 210, 180), (240, 200, 30), (210, 190)),
        ((245, 245, 240), (150, 40, 60), (70, 140, 230), (160, 230)),
        ((150, 100, 60), (60, 150, 90), (200, 220, 40), (250, 160))]
CAPTIONS = ["a ginger cat on a blue rug", "a black cat on a beige sofa", "a white cat on a red blanket",
            "a brown cat in the green grass"]


def cat_photo(path: Path, n: int) -> Path:
    """A drawn cat (head, ears, eyes, nose, whiskers, body) in its own colours and place."""
    from PIL import Image, ImageDraw

    fur, background, eye, (cx, cy) = CATS[n]
    img = Image.new("RGB", (384, 384), background)
    d = ImageDraw.Draw(img)
    r = 62 - 4 * n
    d.ellipse([cx - r - 10, cy + r - 20, cx + r + 50, cy + 2 * r + 70], fill=fur)  # body
    d.polygon([(cx - r, cy - r // 3), (cx - r + 8, cy - r - 45), (cx - r // 4, cy - r + 5)], fill=fur)  # ears
    d.polygon([(cx + r, cy - r // 3), (cx + r - 8, cy - r - 45), (cx + r // 4, cy - r + 5)], fill=fur)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)  # head
    for side in (-1, 1):
        ex = cx + side * r // 2
        d.ellipse([ex - 10, cy - 18, ex + 10, cy + 2], fill=eye)
        d.ellipse([ex - 3, cy - 14, ex + 3, cy - 2], fill=(0, 0, 0))
        for dy in (-4, 6):
            d.line([(cx + side * 12, cy + 16), (cx + side * (r + 25), cy + 16 + dy)], fill=(90, 90, 90), width=2)
    d.polygon([(cx - 7, cy + 8), (cx + 7, cy + 8), (cx, cy + 17)], fill=(240, 130, 150))  # nose
    img = img.resize((512, 512), Image.Resampling.LANCZOS)  # 512 px: big enough not to train soft
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
    path.write_bytes(buf.getvalue())
    return path


def test_new_user_journey_from_photos_to_a_shared_lora(page, chromium, studio, tmp_path):
    shot = iter(range(1, 100))
    for old in ARTIFACTS.glob("08-journey-*.png"):  # numbers shift when steps are added: no stale files
        old.unlink()

    def snap(pg, step: str) -> None:
        screenshot(pg, f"08-journey-{next(shot):02d}-{step}")

    # 1. Sign up and create a dataset.
    sign_up(page, "pat")
    snap(page, "signed-up")
    create_dataset(page, "My cat")
    snap(page, "new-dataset")

    # 2. Drag four photos of the pet onto the drop zone (a real DataTransfer drop).
    files = [cat_photo(tmp_path / f"cat{n}.{'jpg' if n % 2 else 'png'}", n) for n in range(4)]
    dropped = [{"name": f.name, "type": "image/jpeg" if f.suffix == ".jpg" else "image/png",
                "data": base64.b64encode(f.read_bytes()).decode()} for f in files]
    page.evaluate(DROP_JS, [dropped])
    wait_for_js(page, "document.querySelectorAll('#photo-grid .photo-card').length === 4")
    wait_for_js(page, "[...document.querySelectorAll('#photo-grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".upload.rejected").count() == 0 and page.locator("#photo-grid .photo-warning").count() == 0
    snap(page, "photos-dropped")

    # 3. Captions, edited in the grid (Ctrl+S saves each at once).
    # (Cards arrive in upload-completion order: find each photo's card by its file name.)
    for i, f in enumerate(files):
        card = page.locator("#photo-grid .photo-card", has_text=f.name)
        card.locator("textarea.caption").fill(CAPTIONS[i])
        card.locator("textarea.caption").press("Control+s")
        card.locator(".save-state", has_text="saved").wait_for()
    page.locator("#counter", has_text="4 / 4 captioned").wait_for()
    snap(page, "captions-edited")

    # 4. A trigger word, saved and added to every caption.
    page.fill("#id_trigger_word", TRIGGER)
    page.locator("#trigger-advice", has_text="good trigger word").wait_for()
    page.click("#save-style")
    page.locator("#trigger-advice", has_text="Saved").wait_for()
    page.click("#insert-trigger")
    page.locator("#bulk-result", has_text="4 captions changed").wait_for()
    captions = page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)")
    assert all(TRIGGER in c for c in captions), captions
    snap(page, "trigger-word")

    # 5. Launch a short training on the tiny base.
    page.click("#train")
    page.wait_for_url("**/trainings/launch/**")
    page.select_option("#base_model", "tiny")
    page.check("input[name=preset][value=fast]")
    page.click("summary")
    page.fill("#steps", str(STEPS))
    page.fill("#sample_every", str(SAMPLE_EVERY))
    page.fill("#sample_prompts", f"a photo of {TRIGGER}")
    snap(page, "launch")
    page.click("#launch")
    page.wait_for_url(re.compile(r".*/trainings/\d+/$"))
    job_url = page.url

    # 6. Watch it live: the bar moves (a screenshot mid-run), a sample image appears, the state
    # turns succeeded.
    running = ("document.getElementById('job-state').dataset.state === 'training' && "
               "document.getElementById('progress').value >= 10")  # a stretch of loss curve to show
    # The wait is the check: the page showed "training" with the bar past step 10 (on a fast machine
    # the bar may already stand at the end while the state catches up, which is still live).
    wait_for_js(page, running, timeout=180_000)
    snap(page, "training-live")
    page.wait_for_selector("#samples figure img", timeout=180_000)
    page.wait_for_selector("#job-state[data-state=succeeded]", timeout=180_000)
    assert page.eval_on_selector("#progress", "p => p.value") == STEPS
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", page.locator("#samples figure img").first.element_handle())
    snap(page, "trained")

    # 7. Generate with the trigger word and see the image.
    page.click("#generate-with")
    page.wait_for_url("**/generate/?training=*")
    assert page.input_value("select[name=lora]").startswith("training:")
    gen_prompt = f"a photo of {TRIGGER} on a red sofa"
    page.fill("#id_prompt", gen_prompt)
    page.fill("#id_steps", "4")
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    snap(page, "generating")
    page.wait_for_selector("#gen-images img", timeout=120_000)
    wait_for_js(page, "document.getElementById('result').dataset.state === 'succeeded'", timeout=60_000)
    image = page.request.get(page.get_attribute("#gen-images img", "src")).body()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    snap(page, "generated")

    # 8. Publish: the generated image becomes an example and the cover; title, description, license.
    page.goto(job_url)
    page.click("#publish")
    page.wait_for_url("**/gallery/publish/*/")
    snap(page, "publish-page")
    page.locator("#add-examples input[name=image]").first.check()
    page.click("#add-examples button[value=add]")
    ours = page.locator(".examples figure.example", has_text=gen_prompt)
    ours.locator("button[value^=\"cover:\"]").click()
    page.locator(".examples figure.example", has_text=gen_prompt).locator(".badge", has_text="cover").wait_for()
    page.fill("#title", "Pat's cat")
    page.fill("#description", "Our cat, drawn four ways. Use the trigger word in your prompt.")
    page.fill("#tags", "cat, pet")
    page.select_option("#license", "cc-by-4.0")
    snap(page, "publish-form")
    page.click("#publish-button")
    page.wait_for_selector("#unpublish")
    page.click("#view-public")
    page.wait_for_selector("#hub-form", state="attached")  # the owner is offered the Hub push
    snap(page, "published")
    job = TrainingJob.objects.get(owner__username="pat")

    # 9. A second, anonymous visitor finds it by search and opens it.
    visitor = chromium.new_context(base_url=studio.url, accept_downloads=True, viewport={"width": 1280, "height": 900})
    visitor.set_default_timeout(20_000)
    other = visitor.new_page()
    other.goto("/gallery/")
    other.fill("#q", "cat")
    other.click(".filters button[type=submit]")
    other.wait_for_url("**/gallery/?*q=cat*")
    assert other.locator(".model-card").count() == 1
    snap(other, "visitor-search")
    other.click(".model-card")
    assert other.locator("h1").text_content() == "Pat's cat"
    assert other.locator("#trigger").text_content() == TRIGGER
    assert gen_prompt in other.locator(".examples figure.example").first.text_content()  # the cover comes first
    assert other.locator("#hub-form").count() == 0
    snap(other, "visitor-model-page")

    # 10. Download the LoRA: a safetensors file with LoRA keys, the training's own bytes.
    with other.expect_download() as download_info:
        other.locator("#downloads a").first.click()
    path = tmp_path / "downloaded.safetensors"
    download_info.value.save_as(path)
    with job.lora_file.open("rb") as handle:
        assert path.read_bytes() == handle.read()
    with safe_open(str(path), framework="np") as f:
        keys = list(f.keys())
    assert any(".lora_A." in k for k in keys) and any(".lora_B." in k for k in keys), keys[:5]
    other.locator("#downloads").scroll_into_view_if_needed()
    snap(other, "visitor-downloaded")

    # 11. "Try it": generation needs an account, so the login page keeps the LoRA in `next` ...
    other.click("#try-it")
    other.wait_for_url("**/accounts/login/**")
    next_url = parse_qs(urlparse(other.url).query)["next"][0]
    assert next_url == f"/generate/?model={job.gallery_model.pk}"
    snap(other, "visitor-try-it-login")
    # ... and after signing up, following it lands on the generation page with the LoRA chosen.
    sign_up(other, "visitor")
    other.goto(next_url)
    assert other.input_value("select[name=lora]") == f"gallery:{job.gallery_model.pk}"
    assert other.input_value("#id_prompt") == f"a photo of {TRIGGER}"
    snap(other, "visitor-try-it")
    visitor.close()
