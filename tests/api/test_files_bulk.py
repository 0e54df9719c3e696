"""POST /datasets/{id}/files/bulk: the dataset page's exclude / include / delete of many photos."""

from __future__ import annotations

import pytest
from django.test import Client

from trainer.models import Photo

pytestmark = pytest.mark.django_db


def ids_of(dataset) -> list[int]:
    return list(dataset.photos.order_by("pk").values_list("pk", flat=True))


def bulk(api, dataset, **body):
    return api.post(f"/api/v1/datasets/{dataset.pk}/files/bulk", body)


def test_exclude_then_include_many_photos(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=4)
    ids = ids_of(dataset)
    excluded = bulk(alice_api, dataset, op="exclude", ids=ids[:3])
    assert excluded.status_code == 200, excluded.content
    assert excluded.json() == {"dataset": dataset.pk, "op": "exclude", "ids": ids[:3], "count": 3,
                               "counts": {"photos": 4, "captioned": 1, "training": 1}}
    seen = alice_api.get(f"/api/v1/datasets/{dataset.pk}").json()
    assert [p["excluded"] for p in seen["photos"]] == [True, True, True, False]
    assert seen["counts"] == {"photos": 4, "training": 1, "captioned": 1}
    included = bulk(alice_api, dataset, op="include", ids=[ids[0], ids[2], ids[0]]).json()
    assert included["count"] == 2 and included["counts"]["training"] == 3
    assert [p["excluded"] for p in alice_api.get(f"/api/v1/datasets/{dataset.pk}").json()["photos"]] == [False, True, False, False]


def test_delete_many_photos_shows_on_the_web_page(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=3)
    ids = ids_of(dataset)
    deleted = bulk(alice_api, dataset, op="delete", ids=ids[:2]).json()
    assert deleted["count"] == 2 and deleted["counts"] == {"photos": 1, "captioned": 1, "training": 1}
    assert [p["id"] for p in alice_api.get(f"/api/v1/datasets/{dataset.pk}").json()["photos"]] == [ids[2]]
    assert alice_api.get(f"/api/v1/files/{ids[0]}").status_code == 404
    web = Client()
    web.force_login(alice)
    page = web.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "pet2.png" in page and "pet0.png" not in page


def test_ids_of_another_dataset_or_user_change_nothing(alice_api, bob_api, alice, bob, make_dataset):
    mine, other, bobs = make_dataset(alice, n=2), make_dataset(alice, n=1, name="other"), make_dataset(bob, n=1)
    for foreign in (ids_of(other)[0], ids_of(bobs)[0], 999999):
        response = bulk(alice_api, mine, op="delete", ids=[ids_of(mine)[0], foreign])
        assert response.status_code == 422 and response["Content-Type"] == "application/problem+json"
        assert str(foreign) in response.json()["errors"]["ids"][0]
    assert Photo.objects.count() == 4 and not Photo.objects.filter(excluded=True).exists()


def test_someone_elses_dataset_answers_404(alice_api, bob_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    response = bulk(bob_api, dataset, op="delete", ids=ids_of(dataset))
    assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"
    assert bulk(bob_api, type("Missing", (), {"pk": 999999}), op="delete", ids=[1]).json()["detail"] == response.json()["detail"]
    assert dataset.photos.count() == 2


@pytest.mark.parametrize("body, field", [
    ({"op": "hide", "ids": [1]}, "op"),
    ({"ids": [1]}, "op"),
    ({"op": "delete"}, "ids"),
    ({"op": "delete", "ids": []}, "ids"),
    ({"op": "exclude", "ids": "all"}, "ids"),
    ({"op": "exclude", "ids": ["x"]}, "ids[0]"),
    ({"op": "exclude", "ids": [1], "dry_run": True}, "body.dry_run"),
])
def test_bad_input_is_a_422_naming_the_field(alice_api, alice, make_dataset, body, field):
    dataset = make_dataset(alice, n=1)
    response = alice_api.post(f"/api/v1/datasets/{dataset.pk}/files/bulk", body)
    assert response.status_code == 422 and field in response.json()["errors"], response.content
    assert dataset.photos.filter(excluded=False).count() == 1
