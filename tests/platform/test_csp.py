"""Every page carries a Content-Security-Policy that runs only the studio's own scripts; stored
files keep their own, stricter one. (The browser tests fail on anything the policy blocks.)"""

from __future__ import annotations

import pytest
from django.test import override_settings

from flux_studio import csp

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split(None, 1)[1] if " " in part else "" for part in policy.split("; ")}


def test_pages_run_only_the_studios_scripts_and_cannot_be_framed(client, alice):
    client.force_login(alice)
    for url in ("/", "/datasets/", "/gallery/", "/generate/", "/no/such/page/"):
        policy = directives(client.get(url))
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", url
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'", url
        assert policy["form-action"] == "'self'" and policy["base-uri"] == "'self'", url
        # the live pages' socket goes to this host
        assert "ws://testserver" in policy["connect-src"] and "wss://testserver" in policy["connect-src"], url


def test_a_page_says_no_inline_code_the_policy_would_block(client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    client.force_login(alice)
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert 'data-confirm="Delete this dataset and all its photos?"' in page
    assert "onsubmit=" not in page and " style=" not in page


def test_a_stored_file_keeps_its_sandboxed_policy(client, alice, make_dataset):
    photo = make_dataset(alice, n=1).photos.first()
    client.force_login(alice)
    response = client.get(f"/datasets/{photo.dataset_id}/photos/{photo.pk}/thumb/")
    assert response.status_code == 200, response
    assert "sandbox" in response["Content-Security-Policy"]
    assert "script-src" not in response["Content-Security-Policy"]


@pytest.mark.parametrize("endpoint, expected", [
    ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
    (None, "https://bucket-x.s3.eu-west-1.amazonaws.com"),
])
def test_images_may_come_from_the_bucket_stored_files_redirect_to(client, endpoint, expected):
    storages = {"default": {"BACKEND": "storages.backends.s3.S3Storage",
                            "OPTIONS": {"bucket_name": "bucket-x", "endpoint_url": endpoint, "region_name": "eu-west-1"}},
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    csp.file_sources.cache_clear()
    try:
        with override_settings(S3_BUCKET="bucket-x", STORAGES=storages):
            policy = directives(client.get("/gallery/"))
    finally:
        csp.file_sources.cache_clear()
    assert expected in policy["img-src"].split() and expected in policy["media-src"].split()
    assert expected not in policy["script-src"]
    assert directives(client.get("/gallery/"))["img-src"] == "'self' data: blob:", "local storage: this site only"


def test_no_template_holds_code_or_styles_the_policy_would_block():
    """Inline handlers, style attributes and inline scripts or styles are blocked by the policy
    (the browser tests catch only those a test happens to trigger): none in any template."""
    import re
    from pathlib import Path

    from django.conf import settings as django_settings

    root = Path(django_settings.BASE_DIR)
    templates = [p for p in root.rglob("templates/**/*.html") if ".venv" not in p.parts and "staticfiles" not in p.parts]
    assert any(p.name == "tokens.html" for p in templates) and len(templates) > 20
    blocked = re.compile(r"""\son[a-z]+\s*=|\sstyle\s*=|<style\b|<script(?![^>]*\bsrc=)(?![^>]*type="application/json")""", re.I)
    offenders = {str(p.relative_to(root)): m.group(0) for p in templates if (m := blocked.search(p.read_text()))}
    assert not offenders, offenders


def test_the_tokens_page_selects_a_new_token_without_inline_code(client, alice):
    client.force_login(alice)
    page = client.post("/api/v1/tokens/", {"name": "script"}, follow=True).content.decode()
    assert 'id="new-token" data-select-on-click' in page and "onclick" not in page
