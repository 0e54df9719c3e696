"""/trainings: create from a dataset or file ids, validation, autocaption, ownership, cancel, list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.api.conftest import all_pages
from trainer.models import CaptionSource, JobState, TrainingJob

pytestmark = pytest.mark.django_db


def create(api, **input_):
    return api.post("/api/v1/trainings", {"input": input_})


def test_create_from_a_dataset_maps_input_and_status(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=3)
    response = create(alice_api, dataset=dataset.pk, trigger_word="zxq", preset="fast", steps=12, learning_rate=0.001,
                      lora_rank=4, resolution=64, caption_dropout_rate=0.1, sample_prompts=["a photo of zxq"])
    assert response.status_code == 201, response.content
    body = response.json()
    job = TrainingJob.objects.get(pk=body["id"])
    assert no_queue == [job.pk]
    assert body["status"] == "starting" and body["output"] is None and body["error"] is None
    assert body["input"]["steps"] == 12 and body["input"]["lora_rank"] == 4 and body["input"]["caption_dropout_rate"] == 0.1
    assert job.config["caption_dropout"] == 0.1 and job.base_model == "tiny"
    assert body["urls"]["get"].endswith(f"/api/v1/trainings/{job.pk}") and body["urls"]["web"].endswith(f"/trainings/{job.pk}/")
    assert body["created_at"].endswith("Z") and body["completed_at"] is None
    assert body["input"]["memory_mode"] == "fast"


def test_memory_mode_reaches_the_job(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    body = create(alice_api, dataset=dataset.pk, trigger_word="zxq", memory_mode="low").json()
    assert body["input"]["memory_mode"] == "low"
    assert TrainingJob.objects.get(pk=body["id"]).config["memory_mode"] == "low"


def test_create_from_file_ids_copies_into_a_new_dataset(alice_api, alice, make_dataset, no_queue):
    source = make_dataset(alice, n=2, size=300)
    ids = list(source.photos.values_list("pk", flat=True))
    body = create(alice_api, files=ids, trigger_word="zxq").json()
    job = TrainingJob.objects.get(pk=body["id"])
    assert job.dataset_id != source.pk and job.dataset.photos.count() == 2 and job.dataset.trigger_word == "zxq"
    assert all("zxq" in row["caption"] for row in job.snapshot)


@pytest.mark.parametrize("input_, field", [
    ({"steps": 0}, "input.steps"),
    ({"steps": "many"}, "input.steps"),
    ({"steps": 1.5}, "input.steps"),
    ({"lora_rank": True}, "input.lora_rank"),
    ({"learning_rate": 1.0}, "input.learning_rate"),
    ({"resolution": 70}, "input.resolution"),
    ({"preset": "slow"}, "input.preset"),
    ({"base_model": "sdxl"}, "input.base_model"),
    ({"stepz": 10}, "input.stepz"),
    ({"autocaption": "yes"}, "input.autocaption"),
    ({"memory_mode": "tiny"}, "input.memory_mode"),
])
def test_bad_input_is_422_with_field_errors(alice_api, alice, make_dataset, no_queue, input_, field):
    dataset = make_dataset(alice, n=1)
    response = create(alice_api, dataset=dataset.pk, **input_)
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()
    assert no_queue == []


def test_every_bad_setting_is_named_at_once(alice_api, alice, make_dataset, no_queue):
    """A script that sent four wrong settings learns of all four in one answer, not one per try."""
    dataset = make_dataset(alice, n=1)
    response = create(alice_api, dataset=dataset.pk, trigger_word="zxq", steps=-5, learning_rate="NaN",
                      lora_rank=100000, batch_size=0, preset="slow", memory_mode="tiny", resolution=100)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert set(errors) == {"input.steps", "input.learning_rate", "input.lora_rank", "input.batch_size", "input.preset",
                           "input.memory_mode", "input.resolution"}, errors
    assert errors["input.resolution"] == ["100 must be a multiple of 16"]
    assert all(field in response.json()["detail"] for field in errors)
    assert no_queue == []


def test_resolution_takes_one_size_or_a_list_and_names_a_bad_one(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    body = create(alice_api, dataset=dataset.pk, trigger_word="zxq", resolution=[64, 32]).json()
    assert body["input"]["resolution"] == [32, 64]
    assert TrainingJob.objects.get(pk=body["id"]).config["resolution"] == [32, 64]
    assert create(alice_api, dataset=dataset.pk, resolution=48).json()["input"]["resolution"] == 48
    assert create(alice_api, dataset=dataset.pk, resolution=[64.0, 32]).json()["input"]["resolution"] == [32, 64]
    for bad, message in (([32, 40], "40 must be a multiple of 16"), ([], "a list of them"), ("512", "a list of them"),
                         ([64, True], "a list of them"), ([16], "between 32 and 2048"), (64.5, "not a whole number")):
        response = create(alice_api, dataset=dataset.pk, resolution=bad)
        assert response.status_code == 422, response.content
        assert message in " ".join(response.json()["errors"]["input.resolution"]), response.json()
    assert TrainingJob.objects.count() == 3 and len(no_queue) == 3
    from flux_studio.api.openapi import document

    documented = document()["components"]["schemas"]["TrainingInput"]["properties"]["resolution"]["anyOf"]
    assert [schema["type"] for schema in documented] == ["integer", "array"]


def test_a_bad_trigger_word_and_bad_settings_are_named_together(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    body = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "a b", "steps": 0,
                                                          "autocaption": "yes"}}).json()
    assert set(body["errors"]) == {"input.trigger_word", "input.steps", "input.autocaption"}, body
    body = alice_api.post("/api/v1/trainings", {"input": {"dataset": 999999, "preset": "turbo"}}).json()
    assert set(body["errors"]) == {"input.dataset", "input.preset"}, body
    assert not TrainingJob.objects.exists() and no_queue == []


def test_missing_dataset_trigger_and_bad_webhook(alice_api, alice, make_dataset, no_queue):
    assert "input.dataset" in create(alice_api).json()["errors"]
    dataset = make_dataset(alice, n=1, trigger="")
    assert "input.trigger_word" in create(alice_api, dataset=dataset.pk).json()["errors"]
    bad = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk}, "webhook": "ftp://x"})
    assert "webhook" in bad.json()["errors"]
    bad = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk}, "webhook": "https://u:p@x.test:99999/h"})
    assert "port must be a number from 1 to 65535" in bad.json()["errors"]["webhook"][0], "refused now, not at delivery"
    bad = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk}, "webhook": "https://x.test:0/h"})
    assert "port must be a number from 1 to 65535" in bad.json()["errors"]["webhook"][0]
    bad = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk}, "webhook": "http://x.test/",
                                               "webhook_events_filter": ["everything"]})
    assert "webhook_events_filter" in bad.json()["errors"]


def test_bob_never_sees_alices_trainings(alice_api, bob_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    job_id = create(alice_api, dataset=dataset.pk).json()["id"]
    assert bob_api.get(f"/api/v1/trainings/{job_id}").status_code == 404
    assert bob_api.post(f"/api/v1/trainings/{job_id}/cancel").status_code == 404
    assert bob_api.get(f"/api/v1/trainings/{job_id}/files/weights").status_code == 404
    assert bob_api.get("/api/v1/trainings").json()["results"] == []
    assert create(bob_api, dataset=dataset.pk).status_code == 422, "someone else's dataset is not found"
    photo_ids = list(dataset.photos.values_list("pk", flat=True))
    assert create(bob_api, files=photo_ids).status_code == 422


def test_cancel_a_queued_training(alice_api, alice, make_dataset, no_queue):
    job_id = create(alice_api, dataset=make_dataset(alice, n=1).pk).json()["id"]
    body = alice_api.post(f"/api/v1/trainings/{job_id}/cancel").json()
    assert body["status"] == "canceled" and body["completed_at"]
    assert "Canceled before it started." in body["logs"]


def test_outputs_are_owner_only_download_urls(alice_api, bob_api, alice, finished_job):
    job = finished_job(alice)
    body = alice_api.get(f"/api/v1/trainings/{job.pk}").json()
    assert body["status"] == "succeeded" and body["output"]["weights"].endswith(f"/trainings/{job.pk}/files/weights")
    weights = alice_api.get(body["output"]["weights"])
    assert weights.status_code == 200 and b"".join(weights.streaming_content) == b"fake-lora-zqx"
    assert bob_api.get(body["output"]["weights"]).status_code == 404
    assert alice_api.get(body["samples"][0]["url"]).status_code == 200
    assert bob_api.get(body["samples"][0]["url"]).status_code == 404
    assert alice_api.get(f"/api/v1/trainings/{job.pk}/files/nope").status_code == 404


def test_two_trainings_of_one_trigger_word_download_under_different_names(alice_api, alice_client, alice, finished_job):
    first, second = finished_job(alice, trigger="zqx"), finished_job(alice, trigger="zqx")
    names = set()
    for job in (first, second):
        api = alice_api.get(f"/api/v1/trainings/{job.pk}/files/weights")["Content-Disposition"]
        page = alice_client.get(reverse("trainer:job_download", args=[job.pk, "lora"]))["Content-Disposition"]
        assert f'"zqx_{job.pk}_lora.safetensors"' in api and api == page
        names.add(api)
    assert len(names) == 2


def test_list_pages_through_everything(alice_api, alice, finished_job):
    ids = [finished_job(alice, trigger=f"t{i}").pk for i in range(5)]
    assert all_pages(alice_api, "/api/v1/trainings", 2) == sorted(ids, reverse=True)


def test_autocaption_is_one_request_and_a_stage_of_the_training(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=2)
    dataset.photos.update(caption="", caption_source=CaptionSource.NONE)
    response = create(alice_api, dataset=dataset.pk, autocaption=True, autocaption_prefix="photo style")
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert job.state == JobState.QUEUED and job.config["autocaption"] is True
    dataset.refresh_from_db()
    assert dataset.caption_prefix == "photo style"


def test_refused_launch_from_files_leaves_no_dataset_behind(alice_api, alice, make_dataset, no_queue):
    from trainer.models import Dataset

    ids = list(make_dataset(alice, n=1, size=300, trigger="").photos.values_list("pk", flat=True))
    before = Dataset.objects.count()
    response = create(alice_api, files=ids)
    assert response.status_code == 422 and "input.trigger_word" in response.json()["errors"]
    assert Dataset.objects.count() == before
    assert create(alice_api, files=ids, trigger_word="zxq", autocaption=True).status_code == 201


def test_a_count_must_be_a_whole_number(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    for steps in (1.5, "1.5"):
        response = create(alice_api, dataset=dataset.pk, steps=steps)
        assert "whole number" in " ".join(response.json()["errors"]["input.steps"]), response.json()
    assert create(alice_api, dataset=dataset.pk, steps=20.0).status_code == 201  # a JSON number that is whole


def test_the_list_filters_by_status_and_refuses_unknown_query_names(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    made = [alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "zxq"}}).json()["id"]
            for _ in range(4)]
    TrainingJob.objects.filter(pk=made[0]).update(state=JobState.FAILED)
    TrainingJob.objects.filter(pk=made[1]).update(state=JobState.CANCELED)
    TrainingJob.objects.filter(pk=made[2]).update(state=JobState.SUCCEEDED)
    ids = lambda url: [t["id"] for t in alice_api.get(url).json()["results"]]  # noqa: E731
    assert ids("/api/v1/trainings?status=failed,canceled") == [made[1], made[0]]
    assert ids("/api/v1/trainings?status=starting") == [made[3]]
    first = alice_api.get("/api/v1/trainings?status=failed,canceled&page_size=1").json()
    assert [t["id"] for t in first["results"]] == [made[1]] and "status=failed%2Ccanceled" in first["next"]
    assert [t["id"] for t in alice_api.get(first["next"]).json()["results"]] == [made[0]], "the filter follows `next`"
    assert ids("/api/v1/trainings") == made[::-1]
    bad = alice_api.get("/api/v1/trainings?status=broken")
    assert bad.status_code == 422 and "starting, processing, succeeded, failed, canceled" in bad.json()["errors"]["status"][0]
    typo = alice_api.get("/api/v1/trainings?statuss=failed")
    assert typo.status_code == 422 and "statuss" in typo.json()["detail"], "a typo fails loudly, not the whole list"
    assert alice_api.get("/api/v1/predictions?status=succeeded").json()["results"] == []


def test_the_presets_give_the_launch_pages_settings_and_estimates(alice_api):
    from trainer.presets import estimate_seconds, preset_settings

    body = alice_api.get("/api/v1/presets?base_model=flux-dev&photos=12").json()
    assert body["base_model"] == "flux-dev" and "demo" in body["base_models"] and body["photos"] == 12
    assert set(body["memory_modes"]) == {"fast", "low"} and body["default_preset"] == "balanced"
    balanced = next(p for p in body["presets"] if p["key"] == "balanced")
    assert balanced["settings"]["steps"] == 1000 and balanced["settings"]["lora_rank"] == 16
    assert "1,000 steps at rank 16" in balanced["explanation"]
    settings = preset_settings("balanced", "flux-dev")
    assert balanced["estimated_seconds"] == {mode: estimate_seconds({**settings, "memory_mode": mode}, "flux-dev", 12)
                                             for mode in ("fast", "low")}
    assert balanced["estimated_seconds"]["low"] > balanced["estimated_seconds"]["fast"]
    from django.conf import settings as django_settings

    assert alice_api.get("/api/v1/presets").json()["base_model"] == django_settings.DEFAULT_BASE_MODEL
    demo = alice_api.get("/api/v1/presets?base_model=demo").json()
    assert next(p for p in demo["presets"] if p["key"] == "balanced")["settings"]["steps"] == 200, "scaled for a CPU base"
    assert alice_api.get("/api/v1/presets?base_model=sdxl").status_code == 422
    assert alice_api.get("/api/v1/presets?photos=0").status_code == 422
    assert alice_api.get("/api/v1/presets?colour=red").status_code == 422
