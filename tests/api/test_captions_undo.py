"""POST /datasets/{id}/captions/undo: the dataset page's Undo for the last bulk caption edit made
over the API; each caption's text and former source come back, once."""

from __future__ import annotations

import pytest

from trainer.captions import photos_to_caption
from trainer.models import CaptionSource, Photo

pytestmark = pytest.mark.django_db


def photos_of(dataset) -> list[Photo]:
    return list(dataset.photos.order_by("pk"))


def bulk(api, dataset, **body):
    return api.post(f"/api/v1/datasets/{dataset.pk}/captions/bulk", body)


def undo(api, dataset, **body):
    return api.post(f"/api/v1/datasets/{dataset.pk}/captions/undo", body)


def seen(api, dataset) -> list[tuple[str, str]]:
    """(caption, caption_source) of each photo, as GET /datasets/{id} shows them."""
    return [(p["caption"], p["caption_source"]) for p in api.get(f"/api/v1/datasets/{dataset.pk}").json()["photos"]]


def test_undo_puts_back_each_caption_and_where_it_came_from(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=3)
    auto, uploaded, typed = photos_of(dataset)
    Photo.objects.filter(pk=auto.pk).update(caption="a cat by the captioner", caption_source=CaptionSource.AUTO)
    Photo.objects.filter(pk=uploaded.pk).update(caption="a cat from the zip", caption_source=CaptionSource.FILE)
    Photo.objects.filter(pk=typed.pk).update(caption="a cat I described", caption_source=CaptionSource.USER)
    before = seen(alice_api, dataset)

    edited = bulk(alice_api, dataset, op="replace", find="cat", replace="zxq")
    assert edited.status_code == 200, edited.content
    handle = edited.json()["undo"]
    assert handle["url"].endswith(f"/api/v1/datasets/{dataset.pk}/captions/undo") and handle["edit"] >= 1
    assert {source for _, source in seen(alice_api, dataset)} == {"user"}, "a bulk edit marks captions as yours"
    assert photos_to_caption(dataset, None, False) == []

    undone = alice_api.post(handle["url"], {"edit": handle["edit"]})
    assert undone.status_code == 200, undone.content
    body = undone.json()
    assert (body["dataset"], body["edit"], body["op"], body["skipped"]) == (dataset.pk, handle["edit"], "replace", [])
    assert [(c["id"], c["before"], c["after"], c["after_source"]) for c in body["changes"]] == [
        (auto.pk, "a zxq by the captioner", "a cat by the captioner", "auto"),
        (uploaded.pk, "a zxq from the zip", "a cat from the zip", "file"),
        (typed.pk, "a zxq I described", "a cat I described", "user")]
    assert body["counts"] == {"captioned": 3, "training": 3}
    assert seen(alice_api, dataset) == before
    # The auto caption is auto again: the next auto-captioning may refresh it, as after the page's Undo.
    assert [p.pk for p in photos_to_caption(dataset, None, False)] == [auto.pk]

    again = undo(alice_api, dataset)
    assert again.status_code == 409 and again["Content-Type"] == "application/problem+json"
    assert again.json()["type"].endswith("/conflict") and "nothing to undo" in again.json()["detail"]
    assert seen(alice_api, dataset) == before


def test_undoing_a_template_fill_empties_the_captions_again(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2, trigger="QWZ")
    empty = photos_of(dataset)[1]
    Photo.objects.filter(pk=empty.pk).update(caption="", caption_source=CaptionSource.NONE)
    filled = bulk(alice_api, dataset, op="template").json()
    assert [c["id"] for c in filled["changes"]] == [empty.pk] and filled["counts"]["captioned"] == 2
    body = undo(alice_api, dataset).json()
    assert [(c["after"], c["after_source"]) for c in body["changes"]] == [("", "none")]
    assert body["counts"] == {"captioned": 1, "training": 2}
    assert seen(alice_api, dataset)[1] == ("", "none")


def test_only_the_last_bulk_edit_can_be_undone(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    first = bulk(alice_api, dataset, op="prepend", text="film photo,").json()["undo"]
    after_first = seen(alice_api, dataset)
    second = bulk(alice_api, dataset, op="append", text="at dusk").json()["undo"]
    assert second["edit"] != first["edit"]

    stale = undo(alice_api, dataset, edit=first["edit"])
    assert stale.status_code == 409 and str(second["edit"]) in stale.json()["detail"]
    assert seen(alice_api, dataset)[0][0] == "film photo, a photo of zxq on a mat, view 0 at dusk", "nothing changed"

    assert undo(alice_api, dataset).json()["edit"] == second["edit"], "left out: the last edit"
    assert seen(alice_api, dataset) == after_first
    assert undo(alice_api, dataset).status_code == 409, "one level, as on the page"


def test_previews_and_edits_that_change_nothing_keep_the_last_edit_undoable(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    original = seen(alice_api, dataset)
    handle = bulk(alice_api, dataset, op="replace", find="mat", replace="rug").json()["undo"]
    assert bulk(alice_api, dataset, op="append", text="x", dry_run=True).json()["undo"] is None
    nothing = bulk(alice_api, dataset, op="replace", find="no such words", replace="y").json()
    assert nothing["changes"] == [] and nothing["undo"] is None
    assert undo(alice_api, dataset, edit=handle["edit"]).status_code == 200
    assert seen(alice_api, dataset) == original


def test_captions_changed_since_or_deleted_photos_are_skipped(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=3)
    patched, deleted, untouched = photos_of(dataset)
    bulk(alice_api, dataset, op="append", text="at dusk")
    alice_api.patch(f"/api/v1/files/{patched.pk}", {"caption": "my own words"})
    alice_api.delete(f"/api/v1/files/{deleted.pk}")

    body = undo(alice_api, dataset).json()
    assert [c["id"] for c in body["changes"]] == [untouched.pk]
    assert body["skipped"] == [{"id": patched.pk, "reason": "changed"}, {"id": deleted.pk, "reason": "deleted"}]
    assert seen(alice_api, dataset) == [("my own words", "user"), ("a photo of zxq on a mat, view 2", "user")]


def test_someone_elses_dataset_answers_404_and_keeps_its_undo(alice_api, bob_api, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    handle = bulk(alice_api, dataset, op="append", text="at dusk").json()["undo"]
    edited = seen(alice_api, dataset)
    missing = bob_api.post("/api/v1/datasets/999999/captions/undo", {})
    for response in (bob_api.post(handle["url"], {"edit": handle["edit"]}), undo(bob_api, dataset)):
        assert response.status_code == 404
        assert {k: v for k, v in response.json().items() if k != "instance"} == \
               {k: v for k, v in missing.json().items() if k != "instance"}
    assert seen(alice_api, dataset) == edited
    assert undo(alice_api, dataset, edit=handle["edit"]).status_code == 200, "still alice's to undo"


@pytest.mark.parametrize("body, field", [
    ({"edit": "first"}, "edit"),
    ({"edit": 0}, "edit"),
    ({"edit": True}, "edit"),
    ({"edit": [1]}, "edit"),
    ({"all": True}, "body.all"),
])
def test_bad_undo_requests_are_422_and_change_nothing(alice_api, alice, make_dataset, body, field):
    dataset = make_dataset(alice, n=2)
    bulk(alice_api, dataset, op="append", text="at dusk")
    edited = seen(alice_api, dataset)
    response = undo(alice_api, dataset, **body)
    assert response.status_code == 422 and field in response.json()["errors"], response.json()
    assert seen(alice_api, dataset) == edited
    assert undo(alice_api, dataset).status_code == 200, "the edit is still there to undo"
