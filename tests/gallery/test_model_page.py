"""A model's page: liking while logged out, and loading the LoRA outside the studio as the page says."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from gallery.models import Like
from tests.gallery.test_gallery import published

pytestmark = pytest.mark.django_db


def test_a_logged_out_like_from_the_page_script_is_told_to_log_in(alice, make_job):
    model = published(alice, make_job(alice), title="Liked")
    url = reverse("gallery:model_like", args=[model.pk])
    answer = Client().post(url, {"like": "1"}, HTTP_ACCEPT="application/json")
    assert answer.status_code == 401 and answer["Content-Type"] == "application/json"
    assert answer.json()["login_url"] == f"{reverse('login')}?next=%2Fgallery%2F{model.pk}%2F"
    assert "log in" in answer.json()["error"]
    plain = Client().post(url, {"like": "1"})  # without the script: the form post goes to log in, and back
    assert plain.status_code == 302 and plain["Location"] == answer.json()["login_url"]
    assert not Like.objects.exists()


def recipe_of(model) -> str:
    page = Client().get(model.get_absolute_url()).content.decode()
    found = re.search(r'<details id="load-recipe"><summary>(.*?)</details>', page, re.S)
    assert found, "the page shows how to load the LoRA"
    return html.unescape(found.group(1))


def download_name(model, kind: str = "diffusers") -> str:
    response = Client().get(reverse("gallery:model_download", args=[model.pk, kind]))
    return re.search(r'filename="([^"]+)"', response["Content-Disposition"]).group(1)


def test_a_title_with_markup_or_the_trigger_word_names_the_download_cleanly(alice, make_job):
    model = published(alice, make_job(alice, trigger="zxqmira"), title="Shapes & <b>friends</b> · zxqmira")
    assert download_name(model) == "shapes-friends-zxqmira.safetensors"
    assert download_name(model, "kohya") == "shapes-friends-zxqmira-kohya.safetensors"


def test_a_hub_base_is_loaded_by_its_hub_id_with_the_file_as_downloaded(alice, make_job):
    model = published(alice, make_job(alice, trigger="ZXQMIRA", base="flux-dev"), title="Demo blobs")
    recipe = recipe_of(model)
    name = download_name(model)
    assert name == "demo-blobs-ZXQMIRA.safetensors"
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16)' in recipe
    assert f'pipe.load_lora_weights(".", weight_name="{name}")' in recipe
    assert 'pipe("a photo of ZXQMIRA", num_inference_steps=28, guidance_scale=3.5)' in recipe
    assert 'from_pretrained("flux-dev"' not in recipe and "lora.safetensors" not in recipe
    assert "gated" in recipe and "hf auth login" in recipe


def test_schnell_is_sampled_as_schnell(alice, make_job):
    recipe = recipe_of(published(alice, make_job(alice, base="flux-schnell"), title="Fast"))
    assert 'from_pretrained("black-forest-labs/FLUX.1-schnell"' in recipe
    assert "num_inference_steps=4, guidance_scale=0.0" in recipe


@pytest.mark.parametrize("base", ["demo", "tiny"])
def test_a_built_in_base_says_how_to_load_it_honestly(alice, make_job, base):
    model = published(alice, make_job(alice, trigger="zqx", base=base), title="Blobs")
    recipe = recipe_of(model)
    assert "from_pretrained" not in recipe and "not on the Hugging Face Hub" in recipe
    assert (f'python -m trainer.engine generate --base {base} --lora {download_name(model)} '
            f'--prompt "a photo of zqx" --out zqx.png') in recipe
