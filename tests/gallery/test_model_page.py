"""A model's page: liking while logged out."""

from __future__ import annotations

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
