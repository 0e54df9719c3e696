"""The dataset studio in real Chromium: uploads (picker and drop), captions, trigger word, Train."""

from __future__ import annotations

import base64
import re

import pytest

from tests.browser.conftest import screenshot, sign_up, wait_for_js
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


# Records every state an upload row goes through, from the page itself: the progress value,
# the status text ("37%") and whether its thumbnail is shown yet.
WATCH_UPLOADS_JS = """() => {
  window.uploadLog = [];
  const record = () => {
    for (const row of document.querySelectorAll("#uploads .upload")) {
      window.uploadLog.push({ name: row.querySelector(".upload-name").textContent,
        status: row.querySelector(".upload-status").textContent, value: row.querySelector("progress").value,
        thumb: !!row.querySelector("img.mini") });
    }
  };
  new MutationObserver(record).observe(document.getElementById("uploads"),
    { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def create_dataset(page, name: str) -> None:
    """Create a dataset from the list page and wait until its page's scripts have run: a file set
    on the picker, or a drop, before they attach their handlers would go nowhere."""
    page.fill("#id_name", name)
    page.click("text=Create dataset")
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"))
    page.wait_for_load_state("load")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _noisy_png(side: int, seed: int) -> bytes:
    """A photo-sized PNG that does not compress (~side² × 3 bytes), so its upload takes a while."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _check_each_upload_showed_progress_before_its_thumbnail(page, names: list[str]) -> None:
    log = page.evaluate("window.uploadLog")
    for name in names:
        states = [entry for entry in log if entry["name"] == name]
        first_thumb = next(i for i, entry in enumerate(states) if entry["thumb"])
        before = states[:first_thumb]
        assert any(re.fullmatch(r"\d+%", entry["status"]) for entry in before), (name, before)
        # Uploads are throttled, so the bar is seen part-way, not only empty and then full.
        assert any(0 < entry["value"] < 100 for entry in before), (name, before)


def test_dataset_studio_from_photos_to_train(page, tmp_path):
    sign_up(page, "dana")
    create_dataset(page, "Teapot")
    dataset_url = page.url

    # Several photos and one bad file dropped on the drop zone in ONE drop, over a slow uplink.
    page.evaluate(WATCH_UPLOADS_JS)
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": -1,
                                                      "uploadThroughput": 400_000})
    dropped = [{"name": f"teapot{n}.png", "type": "image/png", "data": _b64(_noisy_png(360, n))} for n in (1, 2, 3)]
    dropped.append({"name": "notes.png", "type": "image/png", "data": _b64(b"this is a shopping list, not a photo")})
    page.evaluate(DROP_JS, [dropped])
    # ... and one more through the file picker.
    picked = tmp_path / "teapot4.jpg"
    picked.write_bytes(make_image_bytes(640, 520, color=(200, 30, 30), fmt="JPEG", pattern=4))
    page.set_input_files("#file-input", [str(picked)])

    wait_for_js(page, "document.querySelectorAll('#photo-grid .photo-card').length === 4", timeout=60_000)
    rejected = page.locator(".upload.rejected")
    rejected.wait_for()
    assert "notes.png" in rejected.text_content() and "not an image" in rejected.locator(".reason").text_content()
    wait_for_js(page, "document.querySelectorAll('.upload progress').length === 5 && "
                           "[...document.querySelectorAll('.upload progress')].every(p => p.value === 100)")
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
    _check_each_upload_showed_progress_before_its_thumbnail(page, ["teapot1.png", "teapot2.png", "teapot3.png"])
    assert page.locator(".upload.done img.mini").count() == 4
    wait_for_js(page, "[...document.querySelectorAll('#photo-grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#counter").text_content() == "0 / 4 captioned"
    screenshot(page, "05-dataset-uploaded")

    # Edit a caption and leave it: the autosave timer saves it (no Ctrl+S, no blur); it is there
    # after a reload. (Cards arrive in upload-completion order; after a reload, in upload order.)
    card_id = page.locator("#photo-grid .photo-card").first.get_attribute("data-id")
    card = f'#photo-grid .photo-card[data-id="{card_id}"]'
    page.click(f"{card} textarea.caption")
    page.keyboard.type("a teapot on a wooden table")
    page.locator(f"{card} .save-state", has_text="saved").wait_for()
    assert page.evaluate("document.activeElement.matches('textarea.caption')")  # saved while still typing there
    page.goto(dataset_url)
    assert page.input_value(f"{card} textarea.caption") == "a teapot on a wooden table"
    assert page.locator("#counter").text_content() == "1 / 4 captioned"

    # Filter: only the photos without a caption; search: only matches, the words highlighted.
    page.select_option("#filter", "missing")
    assert page.locator("#photo-grid .photo-card:not([hidden])").count() == 3
    assert page.locator(f"{card}").is_hidden()
    page.select_option("#filter", "all")
    page.fill("#search", "wooden")
    assert page.locator("#photo-grid .photo-card:not([hidden])").count() == 1
    assert page.inner_html(f"{card} .match") == "a teapot on a <mark>wooden</mark> table"
    page.fill("#search", "")
    assert page.locator("#photo-grid .photo-card:not([hidden])").count() == 4

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
    page.locator("#bulk-result", has_text="Trigger word added (all 4 photos): 4 captions changed").wait_for()
    captions = page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)")
    assert all("TPOTZX" in c for c in captions), captions
    assert page.locator("#counter").text_content() == "4 / 4 captioned"
    page.locator("#health", has_text="4 / 4").wait_for()  # the health summary follows the edits
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
    monkeypatch.setenv("CAPTIONERS", "florence2:/nowhere/at-all")  # offered, with no weights there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(folder)


def test_auto_captions_fill_the_grid_live(tiny_captioner, page, tmp_path):
    # tiny_captioner comes before page so the studio's worker starts with it in its environment.
    sign_up(page, "emil")
    create_dataset(page, "Mugs")
    paths = []
    for n in (1, 2):
        path = tmp_path / f"mug{n}.png"
        path.write_bytes(make_image_bytes(520, 520, color=(30 * n, 60, 160), pattern=n))
        paths.append(str(path))
    page.set_input_files("#file-input", paths)
    wait_for_js(page, "document.querySelectorAll('#photo-grid .photo-card').length === 2")
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
    wait_for_js(page, "[...document.querySelectorAll('#photo-grid textarea.caption')].every(t => t.value === 'a photo of MUGZX')")

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
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Exclude plant1.png", "names its photo"
    page.keyboard.press("Enter")
    toggle = page.locator("#photo-grid .photo-card").nth(0).locator(".toggle-exclude", has_text="Include")
    toggle.wait_for()
    assert toggle.get_attribute("aria-label") == "Include plant1.png"
    boxes.nth(0).focus()
    page.keyboard.press("Alt+ArrowDown")
    assert page.evaluate("document.activeElement.value") == "a cactus"
    page.keyboard.press("Alt+ArrowDown")
    page.keyboard.press("Alt+ArrowUp")
    assert page.evaluate("document.activeElement.value") == "a cactus"
    assert "Alt" in page.text_content("#keyboard-help")


def _caption_of(photo_id: int) -> str:
    from trainer.models import Photo

    return Photo.objects.get(pk=photo_id).caption


def _wait_for_caption(photo_id: int, text: str, seconds: float = 10) -> None:
    """The server's copy, polled: a keepalive save may land just after the page is gone."""
    import time

    deadline = time.monotonic() + seconds
    while _caption_of(photo_id) != text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _caption_of(photo_id) == text


def test_a_caption_typed_just_before_a_reload_or_closing_the_tab_is_saved_and_the_page_warns(page):
    sign_up(page, "lena")
    url = _dataset_with_photos("lena", ["a fern", "a cactus"])
    page.goto(url)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.accept()))
    first = page.locator("#photo-grid .photo-card").nth(0)
    photo_id = int(first.get_attribute("data-id"))

    # Reload well inside the 800 ms autosave delay: the browser asks first, and the edit is kept.
    first.locator("textarea.caption").fill("")
    first.locator("textarea.caption").type("a fern in a blue pot")
    page.reload()
    _wait_for_caption(photo_id, "a fern in a blue pot")
    assert dialogs == ["beforeunload"]

    # A save the server refused: leaving warns too (the edit is not on the server).
    page.route("**/caption/", lambda route: route.fulfill(status=500, body="boom"))
    second = page.locator("#photo-grid .photo-card").nth(1)
    second.locator("textarea.caption").press("Control+End")
    page.keyboard.type(" on a sill")
    second.locator(".save-state", has_text="not saved").wait_for()
    page.unroute("**/caption/")
    dialogs.clear()
    page.reload()
    _wait_for_caption(int(second.get_attribute("data-id")), "a cactus on a sill")  # sent again on the way out
    assert dialogs == ["beforeunload"]

    # Closing the tab right after typing: the edit is sent with keepalive and lands.
    first.locator("textarea.caption").press("Control+End")
    page.keyboard.type(", watered")
    page.close(run_before_unload=True)
    _wait_for_caption(photo_id, "a fern in a blue pot, watered")


def test_an_edit_from_a_stale_tab_does_not_overwrite_a_newer_caption_and_esc_undoes(page):
    sign_up(page, "mona")
    url = _dataset_with_photos("mona", ["a fern"])
    page.goto(url)
    other = page.context.new_page()  # a second tab, loaded before the first one's edit
    other.goto(url)
    photo_id = int(page.locator("#photo-grid .photo-card").first.get_attribute("data-id"))

    box = page.locator("textarea.caption").first
    box.fill("a fern in a blue pot")
    page.locator(".save-state", has_text="saved ✓").wait_for()
    assert _caption_of(photo_id) == "a fern in a blue pot"

    stale = other.locator("textarea.caption").first
    stale.press("Control+End")
    other.keyboard.type(", indoors")
    state = other.locator(".save-state", has_text="changed elsewhere")
    state.wait_for()
    assert "a fern in a blue pot" in state.text_content(), "says what is stored now"
    stale.blur()  # autosave on leaving the box does not overwrite it either
    other.wait_for_timeout(1200)
    assert _caption_of(photo_id) == "a fern in a blue pot", "the newer caption is kept"
    assert stale.input_value() == "a fern, indoors", "this tab's text is kept on screen"

    stale.press("Control+End")
    other.keyboard.type(" again")  # editing on: the choice stays on screen, nothing is saved
    other.wait_for_timeout(1200)
    assert other.locator(".save-state .keep-mine").count() == 1 and _caption_of(photo_id) == "a fern in a blue pot"
    other.click(".save-state .keep-mine")  # the person chooses to keep this tab's text (or Ctrl+S)
    other.locator(".save-state", has_text="saved ✓").wait_for()
    assert _caption_of(photo_id) == "a fern, indoors again"

    # Another conflict, resolved the other way with a click: then autosave works again
    page.reload()  # the first tab, up to date
    box.fill("a fern on a sill")
    page.locator(".save-state", has_text="saved ✓").wait_for()
    stale.press("Control+End")
    other.keyboard.type("!")
    other.locator(".save-state .take-theirs").click()
    assert stale.input_value() == "a fern on a sill"
    stale.press("Control+End")
    other.keyboard.type(", watered")
    other.locator(".save-state", has_text="saved ✓").wait_for()
    assert _caption_of(photo_id) == "a fern on a sill, watered"

    # Esc undoes an edit: the text goes back and nothing is saved, even after the autosave delay
    stale.press("Control+End")
    other.keyboard.type(" and more")
    stale.press("Escape")
    other.locator(".save-state", has_text="changes undone").wait_for()
    other.wait_for_timeout(1200)
    assert stale.input_value() == "a fern on a sill, watered" and _caption_of(photo_id) == "a fern on a sill, watered"
    other.close()


def _add_text(page, button: str, text: str, photo_ids: list[int]) -> tuple[str, list[str]]:
    """Press the bulk bar's Prepend or Append with `text`: its answer, and each caption as stored."""
    page.fill("#affix", text)
    page.click(button)
    page.locator("#bulk-result", has_text={"#prepend": "Prepended", "#append": "Appended"}[button]).wait_for()
    return page.text_content("#bulk-result"), [_caption_of(pk) for pk in photo_ids]


def test_the_bulk_bar_edits_only_the_photos_shown(page):
    sign_up(page, "mo")
    page.goto(_dataset_with_photos("mo", ["a red square", "a blue square", "a green square", "a red circle", "a cone"]))
    card_ids = page.locator("#photo-grid .photo-card").evaluate_all("els => els.map(e => Number(e.dataset.id))")
    page.click("#bulk summary")

    # (a) Three ticked under one search, then another search: the hidden three are left out.
    page.fill("#search", "square")
    page.check("#select-all")
    assert page.text_content("#selected-count") == "3 selected"
    page.fill("#search", "circle")
    assert page.locator("#photo-grid .photo-card:not([hidden])").count() == 1
    answer, captions = _add_text(page, "#append", "at noon", card_ids)
    assert captions == ["a red square", "a blue square", "a green square", "a red circle at noon", "a cone"]
    assert "Appended (the 1 photo shown): 1 caption changed" in answer
    assert page.text_content("#selected-count") == "0 selected (3 more hidden by the search or filter, left out)"
    assert page.text_content("#bulk-scope") == "(acts on the 1 photo shown)"

    # (b) Nothing ticked, a search showing three: only those three change, and the bar says so.
    page.fill("#search", "square")
    page.uncheck("#select-all")
    answer, captions = _add_text(page, "#prepend", "photo of", card_ids)
    assert captions == ["photo of a red square", "photo of a blue square", "photo of a green square",
                        "a red circle at noon", "a cone"]
    assert "Prepended (the 3 photos shown): 3 captions changed" in answer
    page.fill("#search", "")
    assert page.text_content("#bulk-scope") == "(acts on all 5 photos)"
    page.fill("#search", "square")

    # One ticked among those shown: only it; hidden by a search, left out; shown again, it counts again.
    page.locator("#photo-grid .photo-card:not([hidden]) .select").first.check()
    assert page.text_content("#bulk-scope") == "(acts on the 1 photo selected)"
    page.fill("#search", "cone")
    assert page.text_content("#bulk-scope") == "(acts on the 1 photo shown)"
    page.fill("#search", "")
    assert page.text_content("#selected-count") == "1 selected"

    # Excluding the ticked photo says so, in place of the last edit's result and its Undo
    assert page.locator("#bulk-result button", has_text="Undo").count() == 1
    page.click("#exclude-selected")
    page.locator("#bulk-result", has_text="Excluded from training: 1 photo.").wait_for()
    assert page.locator("#bulk-result button").count() == 0, "no Undo left that would undo the earlier prepend"


def test_the_first_tick_opens_the_actions_on_the_selection(page):
    """Exclude, Include and Delete of the ticked photos live in "Edit many captions": the first tick
    opens it; once closed by hand, it stays closed while the selection only grows."""
    sign_up(page, "ola")
    page.goto(_dataset_with_photos("ola", ["a red square", "a blue square", "a cone"]))
    ticks = page.locator("#photo-grid .photo-card .select")
    assert page.evaluate("document.getElementById('bulk').open") is False
    ticks.nth(0).check()
    assert page.locator("#delete-selected").is_visible()
    page.click("#bulk summary")  # closed by hand
    ticks.nth(1).check()
    assert page.evaluate("document.getElementById('bulk').open") is False and page.text_content("#selected-count") == "2 selected"


def test_auto_caption_captions_what_the_bulk_bar_would_edit(page):
    import json

    sign_up(page, "nia")
    page.goto(_dataset_with_photos("nia", ["a red square", "a blue square", "a cone"]))
    card_ids = page.locator("#photo-grid .photo-card").evaluate_all("els => els.map(e => Number(e.dataset.id))")

    def asked(search: str = "") -> dict:
        page.fill("#search", search)
        with page.expect_response(lambda r: r.request.method == "POST" and "captions/auto" in r.url) as answered:
            page.click("#auto-caption")
        return json.loads(answered.value.request.post_data)

    page.check("#overwrite")
    page.fill("#search", "square")
    page.check("#select-all")  # both squares ticked ...
    body = asked("cone")  # ... then hidden by another search: only the cone shown is captioned
    assert body == {"ids": [card_ids[2]], "overwrite": True}
    assert asked("")["ids"] == card_ids[:2]  # shown again, the ticked squares are the target
    assert page.text_content("#auto-caption") == "Auto-caption the 2 photos selected"
    page.uncheck("#select-all")
    assert asked("")["ids"] is None  # nothing ticked, no search: all photos


def test_auto_caption_with_a_filter_on_and_nothing_ticked_captions_only_the_photos_shown(tiny_captioner, page):
    # tiny_captioner comes before page so the studio's worker starts with it in its environment.
    sign_up(page, "pia")
    page.goto(_dataset_with_photos("pia", ["a MUGZX mug on a desk", "a mug", "a cup"], trigger="MUGZX"))
    card_ids = page.locator("#photo-grid .photo-card").evaluate_all("els => els.map(e => Number(e.dataset.id))")
    assert page.text_content("#auto-caption") == "Auto-caption"  # no filter: all photos

    page.select_option("#filter", "notrigger")  # hides the photo whose caption has the word
    assert page.locator("#photo-grid .photo-card:not([hidden])").count() == 2
    assert page.text_content("#auto-caption") == "Auto-caption the 2 photos shown"
    page.check("#overwrite")  # the captions are the person's: only overwrite replaces them
    page.click("#auto-caption")
    page.locator("#caption-status", has_text=re.compile(r"Captioned \d+ photo")).wait_for(timeout=90_000)
    assert page.text_content("#caption-status") == "Captioned 2 photos."
    stored = [_caption_of(pk) for pk in card_ids]
    assert stored[0] == "a MUGZX mug on a desk", stored  # hidden by the filter: left alone
    assert all("MUGZX" in c and c not in ("a mug", "a cup") for c in stored[1:]), stored
    in_grid = page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)")
    assert in_grid == stored
    screenshot(page, "05-dataset-auto-captioned-shown")


def test_a_failed_auto_caption_is_still_reported_after_a_reload(page):
    from django.contrib.auth import get_user_model

    from flux_studio import events
    from trainer.models import Dataset

    sign_up(page, "ola")
    url = _dataset_with_photos("ola", ["", "a mug"], trigger="MUGZX")
    dataset = Dataset.objects.get(owner=get_user_model().objects.get(username="ola"))
    events.publish(dataset.topic, "captioning", {"state": "unavailable",
                                                 "message": "no captioner weights can be loaded here: florence2:/nowhere"})
    page.goto(url)
    status = page.locator("#caption-status")
    assert status.is_visible() and "no captioner weights can be loaded here" in status.text_content()
    status.locator("button", has_text="template").click()
    page.locator("#bulk-result", has_text="1 caption changed").wait_for()
    assert page.locator("#photo-grid textarea.caption").evaluate_all("els => els.map(e => e.value)") == [
        "a photo of MUGZX", "a mug"]


@pytest.fixture
def one_mb_limit(monkeypatch):
    monkeypatch.setenv("MAX_PHOTO_MB", "1")  # before `page`, so the studio starts with it


def test_a_photo_over_the_size_limit_is_refused_before_it_uploads(one_mb_limit, page, tmp_path):
    sign_up(page, "hugo")
    create_dataset(page, "Big files")
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" and "upload" in request.url else None)
    big, small = tmp_path / "huge.jpg", tmp_path / "fine.png"
    big.write_bytes(b"\xff\xd8" + b"\0" * (1536 * 1024))  # 1.5 MB: never sent
    small.write_bytes(make_image_bytes(520, 520, color=(90, 60, 30), pattern=2))
    page.set_input_files("#file-input", [str(big), str(small)])
    wait_for_js(page, "document.querySelectorAll('#photo-grid .photo-card').length === 1", timeout=60_000)
    refused = page.locator(".upload.rejected", has_text="huge.jpg")
    assert "1.5 MB is over the 1 MB limit per photo" in refused.locator(".reason").text_content()
    assert len(posts) == 1, posts  # only fine.png travelled
