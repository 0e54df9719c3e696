"""/models: publish a training, browse and search anonymously, drafts stay private."""

from __future__ import annotations

import pytest

from gallery.models import GalleryModel
from tests.api.conftest import ApiClient, body_of
from trainer.models import TrainingJob

pytestmark = pytest.mark.django_db


def publish(api, job, **fields):
    return api.post("/api/v1/models", {"training": job.pk, **fields})


def test_publish_then_anyone_can_browse_search_and_download(alice_api, alice, finished_job):
    job = finished_job(alice, trigger="zqx")
    response = publish(alice_api, job, title="Zqx the cat", description="A very good cat", tags=["cat", "pet"], license="mit")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["published"] and body["title"] == "Zqx the cat" and body["tags"] == ["cat", "pet"]
    assert body["weights"]["sha256"] and body["examples"], "the training's sample became the first example"
    anonymous = ApiClient(None)
    listing = anonymous.get("/api/v1/models?q=cat").json()
    assert [m["id"] for m in listing["results"]] == [body["id"]]
    assert anonymous.get("/api/v1/models?q=dog").json()["results"] == []
    assert body_of(anonymous.get(body["weights"]["url"])) == b"fake-lora-zqx"
    assert anonymous.get(body["examples"][0]["url"]).status_code == 200
    assert anonymous.get(f"/api/v1/models/{body['id']}").json()["owner"] == "alice"


def test_a_model_published_without_a_title_is_named_by_its_trigger_not_its_private_training(alice_api, alice,
                                                                                          finished_job):
    job = finished_job(alice, trigger="zqx")
    TrainingJob.objects.filter(pk=job.pk).update(name="Grandma's medical photos · zqx")
    body = publish(alice_api, job).json()
    assert body["published"] and body["title"] == "zqx LoRA"
    assert "Grandma" not in str(ApiClient(None).get(f"/api/v1/models/{body['id']}").json())


def test_drafts_are_private_and_only_owners_publish(alice_api, bob_api, alice, finished_job):
    job = finished_job(alice)
    draft = publish(alice_api, job, publish=False).json()
    assert draft["published"] is False
    assert bob_api.get(f"/api/v1/models/{draft['id']}").status_code == 404
    assert bob_api.get(draft["weights"]["url"]).status_code == 404
    assert alice_api.get(f"/api/v1/models/{draft['id']}").status_code == 200
    assert publish(bob_api, job).status_code == 404
    assert GalleryModel.objects.get(pk=draft["id"]).published is False


def test_publish_validation(alice_api, alice, finished_job):
    job = finished_job(alice)
    assert "license" in publish(alice_api, job, license="proprietary").json()["errors"]
    assert "tags" in publish(alice_api, job, tags="cat").json()["errors"]
    assert publish(alice_api, job, colour="red").status_code == 422
    assert ApiClient(None).post("/api/v1/models", {"training": job.pk}).status_code == 401


def test_too_long_details_and_a_tag_with_a_comma_are_refused_not_cut(alice_api, alice, finished_job):
    job = finished_job(alice)
    refused = publish(alice_api, job, published=False, title="t" * 121, description="d" * 5001, tags=["a,b", "c"])
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert "at most 120 characters (this one has 121)" in errors["title"][0]
    assert "at most 5,000 characters" in errors["description"][0] and "a tag may not contain a comma" in errors["tags"][0]
    assert not GalleryModel.objects.exists()
    kept = publish(alice_api, job, published=False, title="t" * 120, description="d" * 5000, tags=["a b", "c"]).json()
    assert (len(kept["title"]), len(kept["description"]), kept["tags"]) == (120, 5000, ["a b", "c"])


def test_sort_and_pagination(alice_api, alice, finished_job):
    ids = [publish(alice_api, finished_job(alice, trigger=f"t{i}"), title=f"Model {i}").json()["id"] for i in range(3)]
    first = alice_api.get("/api/v1/models?page_size=2&sort=newest").json()
    second = alice_api.get(first["next"]).json()
    assert [m["id"] for m in first["results"] + second["results"]] == list(reversed(ids))
    assert second["previous"] and second["next"] is None
    assert alice_api.get("/api/v1/models?sort=random").status_code == 422


def test_201_only_when_the_request_created_the_model(alice_api, alice, finished_job):
    job = finished_job(alice)
    assert publish(alice_api, job, published=False).status_code == 201, "a new private draft"
    assert publish(alice_api, job, title="Now public").status_code == 200, "the draft, published"
    assert publish(alice_api, job, published=False).status_code == 200, "unpublished"
    document = alice_api.get("/api/v1/openapi.json").json()
    assert {"200", "201"} <= set(document["paths"]["/models"]["post"]["responses"])


def test_an_unknown_base_model_filter_is_a_422_like_an_unknown_sort(alice_api, alice, finished_job, settings):
    tiny = publish(alice_api, finished_job(alice), title="Tiny one").json()
    assert [m["id"] for m in alice_api.get("/api/v1/models?base_model=tiny").json()["results"]] == [tiny["id"]]
    assert alice_api.get("/api/v1/models?base_model=flux-dev").json()["results"] == [], "offered, no model yet"
    bogus = alice_api.get("/api/v1/models?base_model=bogus")
    assert bogus.status_code == 422 and "flux-dev" in bogus.json()["errors"]["base_model"][0]
    # A base no longer offered here still finds the models published on it.
    settings.BASE_MODELS = ["demo", "flux-dev"]
    assert [m["id"] for m in alice_api.get("/api/v1/models?base_model=tiny").json()["results"]] == [tiny["id"]]


def test_published_false_unpublishes_and_an_empty_tag_list_clears(alice_api, alice, finished_job):
    job = finished_job(alice)
    body = publish(alice_api, job, title="Cats", tags=["cat", "pet"]).json()
    assert body["published"] and body["tags"] == ["cat", "pet"]
    kept = publish(alice_api, job, title="Cats again").json()
    assert kept["tags"] == ["cat", "pet"], "tags absent: unchanged"
    hidden = publish(alice_api, job, published=False, tags=[])
    assert hidden.status_code == 200, "unpublishing changes a model, it creates none"
    hidden = hidden.json()
    assert hidden["published"] is False and hidden["tags"] == []
    anonymous = ApiClient(None)
    assert anonymous.get(f"/api/v1/models/{body['id']}").status_code == 404
    assert anonymous.get(body["weights"]["url"]).status_code == 404
    assert anonymous.get("/api/v1/models").json()["results"] == []
    assert publish(alice_api, job, published=True, publish=False).status_code == 422
    assert publish(alice_api, job, published="no").status_code == 422


def test_examples_only_from_predictions_made_with_that_lora(alice_api, alice, finished_job, settings):
    from django.core.files.base import ContentFile

    from gallery.models import Generation, GenerationImage
    from tests.conftest import make_image_bytes

    job, other = finished_job(alice), finished_job(alice, trigger="oth")

    def prediction_with(training):
        row = {"kind": "training", "id": training.pk, "scale": 1.0, "training_id": training.pk, "label": "x"}
        g = Generation.objects.create(owner=alice, prompt=f"with {training.trigger_word}", base_model="tiny", seed=1,
                                      steps=3, guidance=1.0, width=64, height=64, state="succeeded", loras=[row])
        GenerationImage(generation=g, index=0, seed=1).image.save("i.png", ContentFile(make_image_bytes(64, 64)), save=True)
        return g

    wrong = prediction_with(other)
    stored = lambda: sorted(p for p in (settings.MEDIA_ROOT / "users").rglob("*") if p.is_file())  # noqa: E731
    before = stored()
    # The new draft copies its first example (the training's sample) before the list is refused.
    refused = publish(alice_api, job, examples=[{"prediction": wrong.pk, "index": 0}])
    assert refused.status_code == 422 and "not generated with this model" in refused.json()["detail"]
    assert not GalleryModel.objects.filter(training=job).exists()
    assert stored() == before, "the draft's copied example files are deleted with it"
    accepted = publish(alice_api, job, examples=[{"prediction": prediction_with(job).pk, "index": 0}]).json()
    assert "with zqx" in [e["prompt"] for e in accepted["examples"]]


def test_a_public_example_never_names_the_owners_private_loras(alice_api, bob_api, alice, bob, finished_job):
    """An example made with this model and others names them as "this model", a published model by
    its title, and anything private as "a private LoRA": not the owner's training names."""
    from django.core.files.base import ContentFile

    from gallery.models import Generation, GenerationImage
    from tests.conftest import make_image_bytes

    job = finished_job(alice)
    secret = finished_job(alice, trigger="sec")
    TrainingJob.objects.filter(pk=secret.pk).update(name="Secret project · grandma's house")
    bobs = publish(bob_api, finished_job(bob, trigger="bbb"), title="Bob's watercolour").json()
    sketch = finished_job(alice, trigger="skt")  # another of hers, published: named by its public title
    TrainingJob.objects.filter(pk=sketch.pk).update(name="sketches of the neighbours")
    publish(alice_api, sketch, title="Alice's sketch style")
    rows = [
        {"kind": "training", "id": job.pk, "scale": 1.0, "training_id": job.pk, "label": "alice lora"},
        {"kind": "training", "id": secret.pk, "scale": 0.5, "training_id": secret.pk, "label": "Secret project · grandma's house"},
        {"kind": "gallery", "id": bobs["id"], "scale": 0.7, "training_id": bobs["training"], "label": "Bob's watercolour"},
        {"kind": "training", "id": sketch.pk, "scale": 0.3, "training_id": sketch.pk, "label": "sketches of the neighbours"},
    ]
    g = Generation.objects.create(owner=alice, prompt="zqx in a garden", base_model="tiny", seed=1, steps=3,
                                  guidance=1.0, width=64, height=64, state="succeeded", loras=rows)
    GenerationImage(generation=g, index=0, seed=1).image.save("i.png", ContentFile(make_image_bytes(64, 64)), save=True)

    model = publish(alice_api, job, title="Zqx", examples=[{"prediction": g.pk, "index": 0}]).json()
    seen = bob_api.get(f"/api/v1/models/{model['id']}")
    assert "Secret project" not in seen.content.decode() and "neighbours" not in seen.content.decode()
    made = next(e for e in seen.json()["examples"] if e["prompt"] == "zqx in a garden")
    assert made["settings"]["loras"] == [{"label": "this model", "scale": 1.0}, {"label": "a private LoRA", "scale": 0.5},
                                         {"label": "Bob's watercolour", "scale": 0.7},
                                         {"label": "Alice's sketch style", "scale": 0.3}]
    page = ApiClient(None).get(f"/gallery/{model['id']}/")
    assert page.status_code == 200 and "Secret project" not in page.content.decode()
    again = publish(alice_api, job, examples=[{"prediction": g.pk, "index": 0}]).json()
    assert len(again["examples"]) == len(model["examples"]), "the same picture is still not added twice"


def test_kohya_weights_download_is_the_real_file(alice_api, alice, finished_job):
    job = finished_job(alice)
    body = publish(alice_api, job).json()
    assert body["kohya_weights"]["size"] == len(b"fake-kohya")
    assert body_of(ApiClient(None).get(body["kohya_weights"]["url"])) == b"fake-kohya"
    training = alice_api.get(f"/api/v1/trainings/{job.pk}").json()
    assert body_of(alice_api.get(training["output"]["kohya_weights"])) == b"fake-kohya"


def test_a_refused_publish_saves_nothing_and_copies_no_examples(alice_api, alice, finished_job, settings):
    job = finished_job(alice)  # its sample would become a new draft's first example
    stored = lambda: sorted(p for p in (settings.MEDIA_ROOT / "users").rglob("*") if p.is_file())  # noqa: E731
    before = stored()
    refused = publish(alice_api, job, title="Zqx", license="nope")
    assert refused.status_code == 422 and "license" in refused.json()["errors"]
    assert not GalleryModel.objects.exists()
    assert stored() == before, "no example images left behind in storage"
    assert publish(alice_api, job, title="Zqx", license="mit").status_code == 201


def test_mine_lists_ones_own_models_drafts_included_and_nobody_elses(alice_api, bob_api, alice, bob, finished_job):
    published = publish(alice_api, finished_job(alice, trigger="pubx"), title="Public one").json()
    draft = publish(alice_api, finished_job(alice, trigger="drfx"), published=False, title="Draft one").json()
    publish(bob_api, finished_job(bob, trigger="bobx"), title="Bob's")
    mine = alice_api.get("/api/v1/models?mine=true").json()["results"]
    assert {m["id"]: m["published"] for m in mine} == {draft["id"]: False, published["id"]: True}
    assert [m["id"] for m in alice_api.get("/api/v1/models?mine=true&q=draft").json()["results"]] == [draft["id"]]
    assert draft["id"] not in [m["id"] for m in alice_api.get("/api/v1/models").json()["results"]], "drafts stay private"
    assert draft["id"] not in [m["id"] for m in bob_api.get("/api/v1/models?mine=true").json()["results"]]
    assert ApiClient(None).get("/api/v1/models?mine=true").status_code == 401
    assert alice_api.get("/api/v1/models?mine=yes").status_code == 422


def test_the_gallery_filters_list_bases_popular_tags_and_sorts(alice_api, bob_api, alice, bob, finished_job):
    publish(alice_api, finished_job(alice, trigger="aax"), tags=["film", "portrait"])
    publish(bob_api, finished_job(bob, trigger="bbx"), tags=["film"])
    publish(bob_api, finished_job(bob, trigger="ccx"), published=False, tags=["secret"])  # a draft's tags stay private
    body = ApiClient(None).get("/api/v1/models/filters").json()
    assert body["tags"] == ["film", "portrait"] and body["sorts"] == ["newest", "used", "liked"]
    assert "tiny" in body["base_models"]
    assert ApiClient(None).get("/api/v1/models/filters?x=1").status_code == 422
