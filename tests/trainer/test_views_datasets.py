"""Dataset studio views: pages, uploads, files, caption endpoints, and who may see what."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from django.urls import reverse

from tests.trainer.conftest import make_zip
from trainer.models import CaptionSource, Dataset, Photo

pytestmark = pytest.mark.django_db


def post_json(client, name: str, args: list, body: dict):
    return client.post(reverse(f"trainer:{name}", args=args), json.dumps(body), content_type="application/json")


def test_list_create_rename_delete(alice_client, alice):
    assert alice_client.get(reverse("trainer:dataset_list")).status_code == 200
    res = alice_client.post(reverse("trainer:dataset_list"), {"name": "  Mira  "})
    ds = Dataset.objects.get(owner=alice)
    assert res.url == ds.get_absolute_url() and ds.name == "Mira"
    alice_client.post(reverse("trainer:dataset_rename", args=[ds.pk]), {"name": "Mira v2", "next": "list"})
    ds.refresh_from_db()
    assert ds.name == "Mira v2"
    page = alice_client.get(reverse("trainer:dataset_list")).content.decode()
    assert "Mira v2" in page
    alice_client.post(reverse("trainer:dataset_delete", args=[ds.pk]))
    assert not Dataset.objects.exists()


def test_detail_page_links_train_and_shows_photos(alice_client, dataset, add_photo):
    add_photo(caption="MIRAZX on a sofa")
    html = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert reverse("trainer:job_launch", args=[dataset.pk]) in html
    assert "1 / 1 captioned" in html and "MIRAZX on a sofa" in html and 'id="dropzone"' in html


def test_upload_answers_per_file_json(upload, image_bytes, dataset):
    res = upload("cat.png", image_bytes(600, 600))
    body = res.json()
    assert res.status_code == 200 and body["ok"]
    [row] = body["results"]
    photo = Photo.objects.get(pk=row["photo"]["id"])
    assert row["photo"]["thumbnail_url"] == reverse("trainer:photo_file", args=[dataset.pk, photo.pk, "thumb"])
    assert 'data-id="%d"' % photo.pk in row["html"]
    assert body["counts"] == {"captioned": 0, "total": 1}

    bad = upload("notes.png", b"not an image at all")
    assert bad.status_code == 422 and "not an image" in bad.json()["results"][0]["reason"]
    dup = upload("cat-again.png", image_bytes(600, 600))
    assert dup.status_code == 422 and "exact duplicate" in dup.json()["results"][0]["reason"]


def test_upload_zip_gives_a_row_per_image(upload, image_bytes):
    archive = make_zip({"a.png": image_bytes(300, 300, pattern=1), "a.txt": "hello",
                        "b.png": image_bytes(300, 300, pattern=3), "__MACOSX/._a.png": b"x"})
    body = upload("set.zip", archive).json()
    assert [r["ok"] for r in body["results"]] == [True, True]
    assert body["results"][0]["photo"]["caption"] == "hello"


def test_photo_files_served_to_owner_only(alice_client, bob_client, dataset, add_photo):
    photo = add_photo()
    for kind in ("thumb", "image", "original"):
        url = reverse("trainer:photo_file", args=[dataset.pk, photo.pk, kind])
        res = alice_client.get(url)
        assert res.status_code == 200 and res["Cache-Control"].startswith("private")
        assert bob_client.get(url).status_code == 404
    assert alice_client.get(reverse("trainer:photo_file", args=[dataset.pk, photo.pk, "nope"])).status_code == 404


def test_bob_gets_404_everywhere(bob_client, dataset, add_photo, image_bytes):
    photo = add_photo()
    pk = dataset.pk
    gets = ["dataset_detail", "dataset_export", "dataset_health", "trigger_check"]
    for name in gets:
        assert bob_client.get(reverse(f"trainer:{name}", args=[pk])).status_code == 404, name
    posts = ["dataset_rename", "dataset_delete", "dataset_duplicate", "dataset_style", "photo_upload",
             "photos_action", "captions_bulk", "captions_restore", "captions_auto"]
    for name in posts:
        assert bob_client.post(reverse(f"trainer:{name}", args=[pk]), {"name": "x"}).status_code == 404, name
    assert post_json(bob_client, "photo_caption", [pk, photo.pk], {"caption": "hacked"}).status_code == 404
    photo.refresh_from_db()
    assert photo.caption == "" and Dataset.objects.filter(pk=pk).exists()
    assert bob_client.get(reverse("trainer:dataset_list")).content.decode().count("Mira the cat") == 0


def test_anonymous_is_sent_to_login(client, dataset):
    res = client.get(dataset.get_absolute_url())
    assert res.status_code == 302 and "/login" in res.url


def test_caption_autosave_marks_user_source(alice_client, dataset, add_photo):
    photo = add_photo()
    res = post_json(alice_client, "photo_caption", [dataset.pk, photo.pk], {"caption": "  MIRAZX   asleep "})
    assert res.json()["photo"]["caption"] == "MIRAZX asleep" and res.json()["counts"]["captioned"] == 1
    photo.refresh_from_db()
    assert photo.caption_source == CaptionSource.USER
    assert alice_client.get(reverse("trainer:photo_caption", args=[dataset.pk, photo.pk])).status_code == 405


def test_a_caption_changed_elsewhere_since_the_edit_began_is_not_overwritten(alice_client, dataset, add_photo):
    photo = add_photo(caption="MIRAZX on a sofa")
    url_args = [dataset.pk, photo.pk]
    # Tab A saves first, from the caption both tabs loaded
    first = post_json(alice_client, "photo_caption", url_args, {"caption": "MIRAZX asleep on a green sofa",
                                                                "was": "MIRAZX on a sofa"})
    assert first.status_code == 200
    # Tab B still started from the old caption: refused, told what is stored now
    stale = post_json(alice_client, "photo_caption", url_args, {"caption": "MIRAZX on a sofa, indoors",
                                                                "was": "MIRAZX  on a sofa"})
    assert stale.status_code == 409 and stale.json()["conflict"] is True
    assert stale.json()["photo"]["caption"] == "MIRAZX asleep on a green sofa"
    photo.refresh_from_db()
    assert photo.caption == "MIRAZX asleep on a green sofa", "tab A's edit is kept"
    # B chooses to keep its text (it now starts from what it was shown)
    kept = post_json(alice_client, "photo_caption", url_args, {"caption": "MIRAZX on a sofa, indoors",
                                                               "was": "MIRAZX asleep on a green sofa"})
    assert kept.status_code == 200 and kept.json()["photo"]["caption"] == "MIRAZX on a sofa, indoors"
    # the same save again (a retry, or two saves of one tab overlapping) is no conflict
    again = post_json(alice_client, "photo_caption", url_args, {"caption": "MIRAZX on a sofa, indoors",
                                                                "was": "MIRAZX asleep on a green sofa"})
    assert again.status_code == 200


def test_bulk_replace_preview_apply_and_undo(alice_client, dataset, add_photo):
    a, b, c = add_photo(caption="a Cat on a sofa"), add_photo(caption="a cat by a cat"), add_photo(caption="a dog")
    preview = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": "cat", "replace": "MIRAZX", "dry_run": True}).json()
    assert [ch["after"] for ch in preview["changes"]] == ["a MIRAZX on a sofa", "a MIRAZX by a MIRAZX"]
    a.refresh_from_db()
    assert a.caption == "a Cat on a sofa"  # a preview changes nothing
    applied = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": "cat", "replace": "MIRAZX", "ids": [a.pk, c.pk]}).json()
    assert [ch["id"] for ch in applied["changes"]] == [a.pk]
    a.refresh_from_db()
    assert a.caption == "a MIRAZX on a sofa" and a.caption_source == CaptionSource.USER
    undo = post_json(alice_client, "captions_restore", [dataset.pk], {"captions": {str(ch["id"]): ch["before"] for ch in applied["changes"]}}).json()
    assert undo["ok"]
    a.refresh_from_db()
    assert a.caption == "a Cat on a sofa"
    bad = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": ""})
    assert bad.status_code == 400 and "find" in bad.json()["error"].lower()


@pytest.mark.parametrize("ids", ["12", 12, [1.5], ["1"], [True], {"1": 1}])
def test_bulk_ids_other_than_a_list_of_photo_ids_are_refused_and_change_nothing(alice_client, dataset, add_photo, ids):
    photos = [add_photo(caption=f"cap {i}") for i in range(3)]
    response = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "prepend", "text": "x", "ids": ids})
    assert response.status_code == 400 and "list of photo ids" in response.json()["error"]
    assert [p.caption for p in Photo.objects.filter(pk__in=[p.pk for p in photos]).order_by("pk")] == ["cap 0", "cap 1", "cap 2"]


def test_undo_restores_where_each_caption_came_from(alice_client, dataset, add_photo):
    auto, uploaded, typed = add_photo(), add_photo(caption="a cat from the zip"), add_photo()
    Photo.objects.filter(pk=auto.pk).update(caption="a cat by the captioner", caption_source=CaptionSource.AUTO)
    Photo.objects.filter(pk=typed.pk).update(caption="a cat I described", caption_source=CaptionSource.USER)
    applied = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": "cat", "replace": "MIRAZX"}).json()
    assert {ch["id"]: ch["before_source"] for ch in applied["changes"]} == {
        auto.pk: "auto", uploaded.pk: "file", typed.pk: "user"}
    body = {"captions": {ch["id"]: ch["before"] for ch in applied["changes"]},
            "sources": {ch["id"]: ch["before_source"] for ch in applied["changes"]}}
    assert post_json(alice_client, "captions_restore", [dataset.pk], body).json()["ok"]
    sources = dict(dataset.photos.values_list("pk", "caption_source"))
    assert sources == {auto.pk: CaptionSource.AUTO, uploaded.pk: CaptionSource.FILE, typed.pk: CaptionSource.USER}
    # An auto caption put back by undo is auto again: the next auto-caption may refresh it.
    from trainer.captions import photos_to_caption
    assert [p.pk for p in photos_to_caption(dataset, None, False)] == [auto.pk]


def test_undo_keeps_a_caption_written_after_the_bulk_edit(alice_client, dataset, add_photo):
    a, b = add_photo(caption="a cat asleep"), add_photo(caption="a cat awake")
    applied = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": "cat", "replace": "MIRAZX"}).json()
    post_json(alice_client, "photo_caption", [dataset.pk, b.pk], {"caption": "MIRAZX awake, typed by hand"})
    body = {"captions": {ch["id"]: ch["before"] for ch in applied["changes"]},
            "sources": {ch["id"]: ch["before_source"] for ch in applied["changes"]},
            "expected": {ch["id"]: ch["after"] for ch in applied["changes"]}}
    body["captions"][999999] = "a photo that is gone"  # deleted since, or never here: not "kept"
    undo = post_json(alice_client, "captions_restore", [dataset.pk], body).json()
    assert [ch["id"] for ch in undo["changes"]] == [a.pk] and undo["kept"] == [b.pk]
    a.refresh_from_db(), b.refresh_from_db()
    assert a.caption == "a cat asleep"
    assert b.caption == "MIRAZX awake, typed by hand" and b.caption_source == CaptionSource.USER


def test_prepend_append_insert_trigger_and_template(alice_client, dataset, add_photo):
    a, b, empty = add_photo(caption="on a sofa"), add_photo(caption="MIRAZX asleep"), add_photo()
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "prepend", "text": "photo,", "ids": [a.pk]})
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "append", "text": "soft light", "ids": [a.pk]})
    a.refresh_from_db()
    assert a.caption == "photo, on a sofa soft light"
    # Punctuation joins without a space; a piece's own trailing space is not doubled.
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "append", "text": ", high detail", "ids": [a.pk]})
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "prepend", "text": "film, ", "ids": [a.pk]})
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "append", "text": "...", "ids": [a.pk]})
    a.refresh_from_db()
    assert a.caption == "film, photo, on a sofa soft light, high detail..."
    res = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "insert_trigger"}).json()
    assert {ch["id"] for ch in res["changes"]} == {a.pk, empty.pk}  # b already carries it
    a.refresh_from_db(), empty.refresh_from_db()
    assert a.caption == "MIRAZX, film, photo, on a sofa soft light, high detail..."
    assert empty.caption == "a photo of MIRAZX" and empty.caption_source == CaptionSource.TEMPLATE


def test_insert_trigger_follows_the_caption_style_placement(alice_client, dataset, add_photo):
    dataset.caption_placement = "replace"
    dataset.save()
    subject, no_subject = add_photo(caption="a fluffy cat sleeping on a sofa"), add_photo(caption="sleeping on a sofa")
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "insert_trigger"})
    subject.refresh_from_db(), no_subject.refresh_from_db()
    assert subject.caption == "MIRAZX sleeping on a sofa"  # the subject noun phrase became the trigger
    assert no_subject.caption == "MIRAZX, sleeping on a sofa"  # nothing to replace: put in front
    dataset.caption_placement = "suffix"
    dataset.save()
    Photo.objects.filter(pk=subject.pk).update(caption="a fluffy cat sleeping on a sofa")
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "insert_trigger", "ids": [subject.pk]})
    subject.refresh_from_db()
    assert subject.caption == "a fluffy cat sleeping on a sofa, MIRAZX."


def test_template_fills_only_empty_captions(alice_client, dataset, add_photo):
    dataset.caption_suffix = "film grain"
    dataset.save()
    kept, empty = add_photo(caption="mine"), add_photo()
    post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "template"})
    kept.refresh_from_db(), empty.refresh_from_db()
    assert kept.caption == "mine" and empty.caption == "a photo of MIRAZX, film grain"


def test_photo_actions_exclude_include_delete(alice_client, dataset, add_photo):
    a, b = add_photo(), add_photo()
    post_json(alice_client, "photos_action", [dataset.pk], {"action": "exclude", "ids": [a.pk]})
    a.refresh_from_db()
    assert a.excluded
    res = post_json(alice_client, "photos_action", [dataset.pk], {"action": "delete", "ids": [b.pk]})
    assert res.json()["counts"]["total"] == 0 and not Photo.objects.filter(pk=b.pk).exists()
    assert post_json(alice_client, "photos_action", [dataset.pk], {"action": "explode", "ids": []}).status_code == 400


def test_photo_delete_removes_files(alice_client, dataset, add_photo, django_capture_on_commit_callbacks):
    photo = add_photo()
    storage, names = photo.image.storage, [photo.original.name, photo.image.name, photo.thumbnail.name]
    with django_capture_on_commit_callbacks(execute=True):
        post_json(alice_client, "photos_action", [dataset.pk], {"action": "delete", "ids": [photo.pk]})
    assert not any(storage.exists(name) for name in names)


@pytest.mark.parametrize("delete", ["photo", "dataset"])
def test_files_a_training_job_needs_outlive_the_photo(alice_client, alice, dataset, add_photo, tmp_path, delete,
                                                       django_capture_on_commit_callbacks):
    from trainer.jobs import job_create
    from trainer.work_dirs import materialize_dataset

    trained, other = add_photo(caption="MIRAZX asleep"), add_photo()
    other.excluded = True
    other.save()
    with django_capture_on_commit_callbacks(execute=False):  # queued: no worker picks it up here
        job = job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny")
    storage = trained.image.storage
    with django_capture_on_commit_callbacks(execute=True):
        if delete == "photo":
            post_json(alice_client, "photos_action", [dataset.pk], {"action": "delete", "ids": [trained.pk, other.pk]})
        else:
            alice_client.post(reverse("trainer:dataset_delete", args=[dataset.pk]))
    assert storage.exists(trained.image.name)  # the job trains on this copy
    assert not storage.exists(trained.thumbnail.name) and not storage.exists(trained.original.name)
    assert not any(storage.exists(f.name) for f in (other.image, other.thumbnail, other.original))  # no job uses it
    job.refresh_from_db()
    folder = materialize_dataset(job, tmp_path / "job")  # what the worker does when the job starts or resumes
    assert (folder / "0000.txt").read_text() == "MIRAZX asleep" and (folder / "0000.jpg").stat().st_size > 0


def test_trigger_word_style_and_advice(alice_client, dataset):
    url = reverse("trainer:dataset_style", args=[dataset.pk])
    ok = alice_client.post(url, {"trigger_word": "JELLOMOLD", "caption_placement": "suffix", "caption_prefix": "",
                                 "caption_suffix": ""}, HTTP_ACCEPT="application/json").json()
    assert ok["ok"] and ok["warnings"] == []
    dataset.refresh_from_db()
    assert dataset.trigger_word == "JELLOMOLD" and dataset.caption_placement == "suffix"
    bad = alice_client.post(url, {"trigger_word": "two words", "caption_placement": "prefix"}, HTTP_ACCEPT="application/json")
    assert bad.status_code == 400 and "letters, digits" in bad.json()["error"]
    check = alice_client.get(reverse("trainer:trigger_check", args=[dataset.pk]), {"word": "dog"}).json()
    assert "common English word" in check["warnings"][0]


def test_caption_prompt_is_part_of_the_caption_style(alice_client, dataset, settings):
    settings.CAPTION_PROMPT = ""
    page = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert 'id="id_caption_prompt"' in page and "Write a caption for this image" in page  # the default, as placeholder
    url = reverse("trainer:dataset_style", args=[dataset.pk])
    res = alice_client.post(url, {"trigger_word": "MIRAZX", "caption_placement": "prefix",
                                  "caption_prompt": "  Describe   the cat.  "}, HTTP_ACCEPT="application/json")
    assert res.json()["ok"]
    dataset.refresh_from_db()
    assert dataset.caption_prompt == "Describe the cat."
    copy = alice_client.post(reverse("trainer:dataset_duplicate", args=[dataset.pk]))
    assert Dataset.objects.exclude(pk=dataset.pk).get().caption_prompt == "Describe the cat." and copy.status_code == 302


def test_trigger_check_reports_the_base_models_token_splits(alice_client, dataset, settings):
    url = reverse("trainer:trigger_check", args=[dataset.pk])
    settings.DEFAULT_BASE_MODEL = "demo"
    check = alice_client.get(url, {"word": "circle"}).json()
    assert check["base"] == "demo" and [s["count"] for s in check["splits"]] == [1, 1]
    assert "single token the CLIP and T5 tokenizers already know" in check["warnings"][0]
    page = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert "CLIP tokenizer of the demo base: 6 pieces (m · i · r · a · z · x)" in page  # the saved trigger, MIRAZX
    assert alice_client.get(url, {"word": "circle", "base": "no-such-base"}).status_code == 400


def test_export_zip_has_images_and_captions(alice_client, dataset, add_photo):
    add_photo(caption="MIRAZX asleep")
    excluded = add_photo()
    excluded.excluded = True
    excluded.save()
    res = alice_client.get(reverse("trainer:dataset_export", args=[dataset.pk]))
    assert res["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(res.streaming_content)))
    assert archive.namelist() == ["p1.jpg", "p1.txt"]
    assert archive.read("p1.txt").decode() == "MIRAZX asleep\n"


def test_duplicate_copies_photos_and_files(alice_client, dataset, add_photo):
    photo = add_photo(caption="MIRAZX")
    res = alice_client.post(reverse("trainer:dataset_duplicate", args=[dataset.pk]))
    copy = Dataset.objects.exclude(pk=dataset.pk).get()
    assert res.url == copy.get_absolute_url() and copy.trigger_word == "MIRAZX"
    twin = copy.photos.get()
    assert twin.caption == "MIRAZX" and twin.image.name != photo.image.name
    assert twin.image.read() == photo.image.read()


def test_health_partial(alice_client, dataset, add_photo):
    add_photo(caption="no trigger here")
    html = alice_client.get(reverse("trainer:dataset_health", args=[dataset.pk])).content.decode()
    assert "Dataset health" in html and "1 caption lacks the trigger word" in html and "aim for 10–30" in html
    add_photo(caption="nor here"), add_photo()
    html = alice_client.get(reverse("trainer:dataset_health", args=[dataset.pk])).content.decode()
    assert "2 captions lack the trigger word" in html and "1 caption is missing" in html
    total = sum(dataset.photos.values_list("size_bytes", flat=True))
    assert total < 1024 * 1024 and f"{total / 1024:.1f}\xa0KB" in html and "0.0 MB" not in html, "small sets in KB"


def test_the_list_and_the_health_card_count_the_photos_that_train(alice_client, dataset, add_photo):
    add_photo(caption="MIRAZX one"), add_photo(caption="MIRAZX two"), add_photo()
    excluded = add_photo(caption="MIRAZX left out")
    excluded.excluded = True
    excluded.save()
    row = alice_client.get(reverse("trainer:dataset_list")).content.decode().split(dataset.name, 1)[1].split("</tr>")[0]
    assert '<td>4 <span class="muted">(3 used)</span></td>' in row and "<td>2 / 3</td>" in row, row
    page = alice_client.get(reverse("trainer:dataset_detail", args=[dataset.pk])).content.decode()
    assert "2 / 3 captioned" in page, "the same count as the dataset's own page"
    assert "3 of 4, as excluded photos are left out" in page, "the export says it holds the photos that train"
    html = alice_client.get(reverse("trainer:dataset_health", args=[dataset.pk])).content.decode()
    formats = html.split("<dt>Formats</dt><dd>", 1)[1].split("</dd>")[0]
    assert formats.startswith("3 ") and "stored" in formats, formats


def test_auto_caption_endpoint_enqueues_on_commit(alice_client, dataset, add_photo, monkeypatch, django_capture_on_commit_callbacks):
    calls = []
    monkeypatch.setattr("trainer.captions.caption_dataset_task", lambda *args: calls.append(args))
    photo = add_photo()
    with django_capture_on_commit_callbacks(execute=True):
        res = post_json(alice_client, "captions_auto", [dataset.pk], {"ids": [photo.pk, 99999], "overwrite": True})
    assert res.json()["queued"] and calls == [(dataset.pk, [photo.pk], True)]


def test_a_bulk_edit_that_would_overflow_a_caption_is_refused_whole_and_names_the_photos(alice_client, dataset, add_photo):
    short, long_one = add_photo(caption="a cat"), add_photo(caption="a cat " + "x" * 1950)
    body = {"op": "append", "text": "y" * 60, "ids": [short.pk, long_one.pk]}
    for dry_run in (True, False):  # the preview says what applying would say
        res = post_json(alice_client, "captions_bulk", [dataset.pk], {**body, "dry_run": dry_run})
        assert res.status_code == 400 and res.json()["fields"].keys() == {"text"}
        error = res.json()["error"]
        assert "Nothing was changed" in error and f"{long_one.original_name} (#{long_one.pk}, 2017 characters)" in error
        assert short.original_name not in error
    short.refresh_from_db(), long_one.refresh_from_db()
    assert short.caption == "a cat" and long_one.caption == "a cat " + "x" * 1950, "all or nothing, never cut"
    # The text itself over a caption's limit is refused before any caption is read.
    over = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "prepend", "text": "y" * 5000})
    assert over.status_code == 400 and "5000 characters is over" in over.json()["error"]
    fits = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "prepend", "text": "y" * 1994, "ids": [short.pk]})
    short.refresh_from_db()
    assert fits.json()["ok"] and short.caption == "y" * 1994 + " a cat" and len(short.caption) == 2000


def test_a_typed_caption_over_the_limit_is_refused_not_cut(alice_client, dataset, add_photo):
    photo = add_photo(caption="a cat")
    res = post_json(alice_client, "photo_caption", [dataset.pk, photo.pk], {"caption": "z" * 2001})
    assert res.status_code == 400 and "2001 characters is over the limit of 2000" in res.json()["error"]
    photo.refresh_from_db()
    assert photo.caption == "a cat"


@pytest.mark.parametrize("name, args, body, field", [
    ("photo_caption", "photo", {"caption": ["x"]}, "caption"),
    ("photo_caption", "photo", {"caption": None}, "caption"),
    ("photo_caption", "photo", {"caption": 5}, "caption"),
    ("captions_restore", "dataset", {"captions": {"ID": None}}, "captions"),
    ("captions_restore", "dataset", {"captions": {"ID": ["x"]}}, "captions"),
    ("captions_restore", "dataset", {"captions": {"ID": "x"}, "expected": {"ID": 3}}, "expected"),
    ("captions_restore", "dataset", {"captions": ["x"]}, "captions"),
    ("captions_bulk", "dataset", {"op": "append", "text": ["x"]}, "text"),
    ("captions_bulk", "dataset", {"op": "replace", "find": "cat", "replace": None}, "replace"),
    ("captions_bulk", "dataset", {"op": ["append"], "text": "x"}, "op"),
])
def test_json_endpoints_refuse_captions_that_are_not_text(alice_client, dataset, add_photo, name, args, body, field):
    photo = add_photo(caption="a cat")
    body = json.loads(json.dumps(body).replace('"ID"', f'"{photo.pk}"'))
    res = post_json(alice_client, name, [dataset.pk, photo.pk] if args == "photo" else [dataset.pk], body)
    assert res.status_code == 400 and not res.json()["ok"] and field in res.json()["fields"], res.json()
    photo.refresh_from_db()
    assert photo.caption == "a cat", "never stored as \"['x']\" or \"None\""


@pytest.mark.parametrize("state, message, shown", [
    ("unavailable", "no captioner weights can be loaded here: florence2:/nowhere is not a folder", "bad"),
    ("failed", "Captioning stopped: out of memory", "bad"),
    ("started", "Captioning 2 photos with florence2…", "muted"),
    ("finished", "Captioned 2 photos.", None),
])
def test_the_page_loads_with_the_latest_captioning_runs_failure_or_progress(alice_client, dataset, add_photo,
                                                                           state, message, shown):
    from flux_studio import events

    add_photo()
    events.publish(dataset.topic, "captioning", {"state": "started", "message": "an older run"})
    events.publish(dataset.topic, "captioning", {"state": state, "message": message})
    html = alice_client.get(dataset.get_absolute_url()).content.decode()
    box = re.search(r'<div id="caption-status" class="([^"]*)"[^>]*?(hidden)?>(.*?)</div>', html, re.S)
    if shown is None:
        assert box.group(2) == "hidden" and box.group(3) == ""
        return
    assert box.group(2) is None and box.group(1) == f"status {shown}" and message in box.group(3)
    assert ("Fill empty captions with the template" in box.group(3)) == (shown == "bad")


def test_a_caption_over_the_limit_from_a_zip_may_be_edited_but_not_lengthened(alice_client, dataset, add_photo):
    long = add_photo(caption="a cat " * 400)  # 2,399 characters, kept whole from a zip's .txt
    short = add_photo(caption="a cat asleep")
    replaced = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "replace", "find": "cat", "replace": "dog"})
    assert replaced.status_code == 200 and len(replaced.json()["changes"]) == 2
    longer = post_json(alice_client, "captions_bulk", [dataset.pk], {"op": "append", "text": "at noon"})
    assert longer.status_code == 400 and f"#{long.pk}" in longer.json()["error"]
    short.refresh_from_db()
    assert short.caption == "a dog asleep"  # all or nothing: the refused append changed nothing


def test_restore_refuses_text_longer_than_any_caption(alice_client, dataset, add_photo):
    photo = add_photo(caption="a cat")
    huge = post_json(alice_client, "captions_restore", [dataset.pk], {"captions": {photo.pk: "x" * 70_000}})
    assert huge.status_code == 400
    photo.refresh_from_db()
    assert photo.caption == "a cat"
