"""Error pages look like the studio and lead somewhere; the studio has an icon."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


def test_a_missing_page_is_the_studios_page_with_a_way_on(client, alice):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Nothing here" in page and 'href="/gallery/' in page and "Log in" in page
    client.force_login(alice)
    page = client.get("/no/such/page/").content.decode()
    assert "alice" in page and "Log in</a>" not in page.split("</header>")[1]


def test_someone_elses_dataset_gets_the_same_page(client, alice, bob, make_dataset):
    dataset = make_dataset(alice, n=1)
    client.force_login(alice)
    assert client.get(f"/datasets/{dataset.pk}/").status_code == 200
    client.force_login(bob)
    response = client.get(f"/datasets/{dataset.pk}/")
    assert response.status_code == 404 and "Nothing here" in response.content.decode()


def test_the_studio_has_an_icon(client):
    page = client.get("/").content.decode()
    assert 'rel="icon" href="/static/img/favicon.svg"' in page
    assert finders.find("img/favicon.svg")
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/img/favicon.svg"


def test_a_server_error_page_needs_no_context():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "Something went wrong on our side" in page and "favicon.svg" in page
