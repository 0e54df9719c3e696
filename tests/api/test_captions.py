"""Captions over the API: one photo's caption and `excluded` flag (PATCH /files/{id}), bulk edits
with ids, and auto-captioning started on its own (202, then polled)."""

from __future__ import annotations

import pytest

from flux_studio.models import Event
from tests.api.conftest import ApiClient
from trainer import captions
from trainer.models import CaptionSource, Photo

pytestmark = pytest.mark.django_db


def photos_of(dataset) -> list[Photo]:
    return list(dataset.photos.order_by("pk"))


def test_patch_a_files_caption_and_excluded_flag(alice_api, alice, make_dataset):
    photo = photos_of(make_dataset(alice, n=2))[0]
    url = f"/api/v1/files/{photo.pk}"
    body = alice_api.patch(url, {"caption": "  zxq   asleep on a sofa ", "excluded": True})
    assert body.status_code == 200, body.content
    assert (body.json()["caption"], body.json()["excluded"], body.json()["caption_source"]) == ("zxq asleep on a sofa", True, "user")
    photo.refresh_from_db()
    assert (photo.caption, photo.excluded, photo.caption_source) == ("zxq asleep on a sofa", True, CaptionSource.USER)
    assert alice_api.get(url).json()["excluded"] is True
    included = alice_api.patch(url, {"excluded": False}).json()
    assert included["excluded"] is False and included["caption"] == "zxq asleep on a sofa", "caption left out: unchanged"
    cleared = alice_api.patch(url, {"caption": ""}).json()
    assert cleared["caption"] == "" and cleared["caption_source"] == "none"
    counts = alice_api.get(f"/api/v1/datasets/{photo.dataset_id}").json()["counts"]
    assert counts == {"photos": 2, "training": 2, "captioned": 1}


@pytest.mark.parametrize("body, field", [
    ({"caption": 5}, "caption"),
    ({"caption": "x" * 2001}, "caption"),
    ({"excluded": "yes"}, "excluded"),
    ({"excluded": 1}, "excluded"),
    ({"name": "renamed.png"}, "body.name"),
])
def test_bad_file_edits_are_422_and_change_nothing(alice_api, alice, make_dataset, body, field):
    photo = photos_of(make_dataset(alice, n=1))[0]
    before = (photo.caption, photo.excluded)
    response = alice_api.patch(f"/api/v1/files/{photo.pk}", {"caption": "new text", **body} if field != "caption" else body)
    assert response.status_code == 422 and field in response.json()["errors"]
    photo.refresh_from_db()
    assert (photo.caption, photo.excluded) == before
    assert alice_api.patch(f"/api/v1/files/{photo.pk}", {}).status_code == 422


def test_someone_elses_file_cannot_be_edited(alice_api, bob_api, alice, make_dataset):
    photo = photos_of(make_dataset(alice, n=1))[0]
    response = bob_api.patch(f"/api/v1/files/{photo.pk}", {"caption": "mine", "excluded": True})
    assert response.status_code == 404
    assert ApiClient(None).patch(f"/api/v1/files/{photo.pk}", {"caption": "x"}).status_code == 401
    photo.refresh_from_db()
    assert photo.caption.startswith("a photo of zxq") and not photo.excluded


def test_bulk_prepend_append_and_replace_on_chosen_ids(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=3)
    first, second, third = photos_of(dataset)
    url = f"/api/v1/datasets/{dataset.pk}/captions/bulk"
    preview = alice_api.post(url, {"op": "prepend", "text": "film photo,", "ids": [first.pk], "dry_run": True}).json()
    assert preview["dry_run"] and [c["id"] for c in preview["changes"]] == [first.pk]
    assert preview["changes"][0]["after"] == "film photo, a photo of zxq on a mat, view 0"
    first.refresh_from_db()
    assert first.caption == "a photo of zxq on a mat, view 0", "a dry run changes nothing"

    done = alice_api.post(url, {"op": "prepend", "text": "film photo,", "ids": [first.pk, second.pk]})
    assert done.status_code == 200 and {c["id"] for c in done.json()["changes"]} == {first.pk, second.pk}
    alice_api.post(url, {"op": "append", "text": "at dusk", "ids": [third.pk]})
    replaced = alice_api.post(url, {"op": "replace", "find": "MAT", "replace": "rug"}).json()
    assert len(replaced["changes"]) == 3 and replaced["counts"] == {"captioned": 3, "training": 3}
    captions_now = [p["caption"] for p in alice_api.get(f"/api/v1/datasets/{dataset.pk}").json()["photos"]]
    assert captions_now == ["film photo, a photo of zxq on a rug, view 0", "film photo, a photo of zxq on a rug, view 1",
                            "a photo of zxq on a rug, view 2 at dusk"]
    untouched = alice_api.post(url, {"op": "replace", "find": "MAT", "replace": "rug", "case_sensitive": True}).json()
    assert untouched["changes"] == []


def test_bulk_insert_trigger_and_template(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2, trigger="QWZ")
    first, second = photos_of(dataset)
    Photo.objects.filter(pk=first.pk).update(caption="a cat on a mat")
    Photo.objects.filter(pk=second.pk).update(caption="", caption_source=CaptionSource.NONE)
    url = f"/api/v1/datasets/{dataset.pk}/captions/bulk"
    filled = alice_api.post(url, {"op": "template"}).json()["changes"]
    assert [(c["id"], c["after"]) for c in filled] == [(second.pk, "a photo of QWZ")]
    inserted = alice_api.post(url, {"op": "insert_trigger", "ids": [first.pk]}).json()["changes"]
    assert inserted[0]["after"] == "QWZ, a cat on a mat"


@pytest.mark.parametrize("body, field", [
    ({"op": "shout"}, "op"),
    ({"text": "x"}, "op"),
    ({"op": "append", "text": "x", "ids": []}, "ids"),
    ({"op": "append", "text": "x", "ids": "1,2"}, "ids"),
    ({"op": "append", "text": "x", "ids": ["a"]}, "ids[0]"),
    ({"op": "append", "text": "x", "ids": [99999999]}, "ids"),
    ({"op": "append"}, "text"),
    ({"op": "replace"}, "find"),
    ({"op": "append", "text": 3}, "text"),
    ({"op": "append", "text": "x", "dry_run": "yes"}, "dry_run"),
    ({"op": "append", "text": "x", "colour": 1}, "body.colour"),
])
def test_bad_bulk_requests_are_422_and_change_nothing(alice_api, alice, make_dataset, body, field):
    dataset = make_dataset(alice, n=2)
    before = [p.caption for p in photos_of(dataset)]
    response = alice_api.post(f"/api/v1/datasets/{dataset.pk}/captions/bulk", body)
    assert response.status_code == 422 and field in response.json()["errors"], response.json()
    assert [p.caption for p in photos_of(dataset)] == before


def test_a_bulk_edit_that_would_overflow_a_caption_is_a_422_naming_it_and_changes_nothing(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    first, second = photos_of(dataset)
    url = f"/api/v1/datasets/{dataset.pk}/captions/bulk"
    response = alice_api.post(url, {"op": "prepend", "text": "y" * 1990, "ids": [first.pk, second.pk]})
    assert response.status_code == 422, response.json()
    detail = response.json()["errors"]["text"][0]
    assert "Nothing was changed" in detail and f"pet0.png (#{first.pk}, " in detail and f"pet1.png (#{second.pk}, " in detail
    assert [p.caption for p in photos_of(dataset)] == ["a photo of zxq on a mat, view 0", "a photo of zxq on a mat, view 1"]
    assert alice_api.post(url, {"op": "prepend", "text": "y" * 1990, "ids": [first.pk], "dry_run": True}).status_code == 422
    assert alice_api.post(f"/api/v1/datasets/{dataset.pk}/captions/undo", {}).status_code == 409, "no edit was kept"


def test_bulk_refuses_ids_of_another_dataset(alice_api, alice, bob, make_dataset):
    mine, theirs = make_dataset(alice, n=1), make_dataset(bob, n=1)
    foreign = photos_of(theirs)[0]
    response = alice_api.post(f"/api/v1/datasets/{mine.pk}/captions/bulk", {"op": "append", "text": "x", "ids": [foreign.pk]})
    assert response.status_code == 422 and str(foreign.pk) in response.json()["detail"]
    foreign.refresh_from_db()
    assert not foreign.caption.endswith(" x")


def test_auto_caption_is_queued_and_pollable(alice_api, alice, make_dataset, monkeypatch, django_capture_on_commit_callbacks):
    queued: list[tuple] = []
    monkeypatch.setattr(captions, "caption_dataset_task", lambda *args: queued.append(args))
    dataset = make_dataset(alice, n=3)
    ids = [p.pk for p in photos_of(dataset)]
    url = f"/api/v1/datasets/{dataset.pk}/captioning"
    assert alice_api.get(url).json()["status"] is None, "never captioned"
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(url, {"ids": ids[:2], "overwrite": True})
    assert response.status_code == 202, response.content
    assert response.json()["urls"]["get"] == response["Location"] and response["Location"].endswith(url)
    assert queued == [(dataset.pk, ids[:2], True)], "the same task the web's button queues"
    polled = alice_api.get(url).json()
    assert polled["status"] == "starting" and polled["message"] == "Captioning is queued."
    # The worker reports through the dataset's events, as it does for the page.
    Event.objects.create(topic=dataset.topic, kind="captioning", data={"state": "started", "total": 2, "done": 0})
    assert alice_api.get(url).json()["status"] == "processing"
    Event.objects.create(topic=dataset.topic, kind="captioning",
                         data={"state": "finished", "total": 2, "done": 2, "kept": 0, "failed": 0, "message": "Captioned 2 photos."})
    done = alice_api.get(url).json()
    assert done["status"] == "succeeded" and done["metrics"]["done"] == 2 and done["error"] is None
    assert alice_api.get(f"/api/v1/datasets/{dataset.pk}").json()["captioning"]["status"] == "succeeded"
    Event.objects.create(topic=dataset.topic, kind="captioning", data={"state": "unavailable", "message": "no captioner weights"})
    failed = alice_api.get(url).json()
    assert failed["status"] == "failed" and "no captioner" in failed["error"]


def test_auto_caption_defaults_to_all_photos_and_refuses_bad_input(alice_api, alice, make_dataset, monkeypatch,
                                                                   django_capture_on_commit_callbacks):
    queued: list[tuple] = []
    monkeypatch.setattr(captions, "caption_dataset_task", lambda *args: queued.append(args))
    dataset = make_dataset(alice, n=2)
    url = f"/api/v1/datasets/{dataset.pk}/captioning"
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.post(url).status_code == 202
    assert queued == [(dataset.pk, None, False)]
    for body, field in (({"overwrite": "yes"}, "overwrite"), ({"ids": [123456789]}, "ids"), ({"all": True}, "body.all")):
        response = alice_api.post(url, body)
        assert response.status_code == 422 and field in response.json()["errors"]
    empty = make_dataset(alice, n=0, name="empty")
    response = alice_api.post(f"/api/v1/datasets/{empty.pk}/captioning")
    assert response.status_code == 422 and "no photos to caption" in response.json()["detail"]
    assert len(queued) == 1


def test_problem_documents_are_problem_json(alice_api, alice, make_dataset):
    response = alice_api.post(f"/api/v1/datasets/{make_dataset(alice, n=1).pk}/captions/bulk", {"op": "nope"})
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/validation") and response.json()["status"] == 422
    assert response.json()["errors"] == {"op": ["one of replace, prepend, append, insert_trigger, template"]}


@pytest.mark.django_db(transaction=True)
def test_the_202_answer_already_says_queued(alice_api, alice, make_dataset, monkeypatch):
    """Real commits (no test transaction around the request): the answer shows the queued run."""
    monkeypatch.setattr(captions, "caption_dataset_task", lambda *args: None)
    dataset = make_dataset(alice, n=1)
    response = alice_api.post(f"/api/v1/datasets/{dataset.pk}/captioning")
    assert response.status_code == 202 and response.json()["status"] == "starting"
    assert response.json()["message"] == "Captioning is queued."
