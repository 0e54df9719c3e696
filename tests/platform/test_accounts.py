"""Sign up, log in, log out, change password; pages need an account."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_sign_up_logs_the_person_in(client, django_user_model):
    response = client.post(reverse("signup"), {
        "username": "carol", "password1": "plants and pots 42", "password2": "plants and pots 42",
    })
    assert response.status_code == 302
    assert django_user_model.objects.filter(username="carol").exists()
    page = client.get(reverse("home"))
    assert b"carol" in page.content and b"Log out" in page.content


def test_sign_up_rejects_weak_password(client, django_user_model):
    response = client.post(reverse("signup"), {"username": "dave", "password1": "123", "password2": "123"})
    assert response.status_code == 200
    assert b"too short" in response.content
    assert not django_user_model.objects.filter(username="dave").exists()


def test_log_in_and_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 302
    assert b"alice" in client.get(reverse("home")).content
    client.post(reverse("logout"))
    assert b"Log in" in client.get(reverse("home")).content


def test_password_change(alice_client, alice):
    response = alice_client.post(reverse("password_change"), {
        "old_password": "correct horse battery", "new_password1": "a brand new secret 7", "new_password2": "a brand new secret 7",
    })
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("a brand new secret 7")


def test_there_is_no_password_reset_page_that_pretends_to_send_email(client, alice):
    """Accounts have no email address to send a reset link to; an admin sets a new password."""
    assert client.get("/accounts/password_reset/").status_code == 404
    assert client.post("/accounts/password_reset/", {"email": "alice@example.com"}).status_code == 404
    assert client.get(reverse("login")).status_code == 200


@pytest.mark.parametrize("name", ["trainer:dataset_list", "trainer:job_list", "gallery:generate"])
def test_private_areas_need_an_account(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_gallery_is_public_and_navigation_shows_four_areas(client):
    page = client.get(reverse("gallery:browse"))
    assert page.status_code == 200
    for area in (b"Datasets", b"Training", b"Generate", b"Gallery"):
        assert area in page.content


def test_admin_is_for_staff(client, alice, django_user_model):
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    assert client.get("/admin/").status_code == 200


def test_sign_up_returns_to_where_the_person_was_going(client):
    response = client.post(reverse("signup") + "?next=/generate/%3Fmodel%3D7", {
        "username": "fay", "password1": "plants and pots 42", "password2": "plants and pots 42", "next": "/generate/?model=7",
    })
    assert response.status_code == 302 and response["Location"] == "/generate/?model=7"


def test_sign_up_ignores_a_next_to_another_site(client):
    response = client.post(reverse("signup"), {
        "username": "gus", "password1": "plants and pots 42", "password2": "plants and pots 42", "next": "https://evil.example/",
    })
    assert response["Location"] == reverse("trainer:dataset_list")


def test_the_account_forms_are_valid_html_no_list_inside_a_paragraph(alice_client):
    """Django's as_p puts the password rules' <ul> inside a <p>, which HTML does not allow."""
    import re

    from django.test import Client

    visitor = Client()
    for c, url in ((visitor, "/accounts/signup/"), (visitor, "/accounts/login/"), (alice_client, "/accounts/password_change/")):
        page = c.get(url).content.decode()
        assert "<form" in page and not re.search(r"<p>(?:(?!</p>).)*<ul", page, re.S), url


def test_password_guessing_is_stopped_for_a_while(alice, settings):
    """After 10 wrong passwords for one name, even the right one is refused for 5 minutes (429),
    other people are not; a right password before the limit starts the count over."""
    from django.core.cache import cache
    from django.test import Client

    from flux_studio import views

    guesser = Client()
    for n in range(9):
        assert guesser.post("/accounts/login/", {"username": "alice", "password": f"guess {n}"}).status_code == 200
    assert guesser.post("/accounts/login/", {"username": "alice", "password": "correct horse battery"}).status_code == 302
    for n in range(10):
        guesser.post("/accounts/login/", {"username": "ALICE", "password": f"guess {n}"})
    refused = Client().post("/accounts/login/", {"username": "alice", "password": "correct horse battery"})
    assert refused.status_code == 429 and "Too many failed log-ins" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session
    for key in (views.login_counter("name", "alice"), views.login_counter("address", "127.0.0.1")):
        cache.delete(key)  # the 5 minutes are over
    assert Client().post("/accounts/login/", {"username": "alice", "password": "correct horse battery"}).status_code == 302


def test_a_locked_log_in_answers_the_same_for_a_right_and_a_wrong_password(alice):
    """The lock must not show whether a guess was right: the password is not even checked."""
    from django.test import Client

    guesser = Client()
    for n in range(10):
        guesser.post("/accounts/login/", {"username": "alice", "password": f"guess {n}"})
    right = guesser.post("/accounts/login/", {"username": "alice", "password": "correct horse battery"})
    wrong = guesser.post("/accounts/login/", {"username": "alice", "password": "another guess"})
    assert right.status_code == wrong.status_code == 429

    def page(response) -> str:  # the CSRF token is masked anew for each page
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())

    assert page(right) == page(wrong)
    assert "Please enter a correct username" not in wrong.content.decode()


def test_behind_the_https_proxy_the_address_lock_counts_the_client_not_the_proxy(alice, settings):
    from django.test import Client

    settings.SECURE = True
    settings.SECURE_SSL_REDIRECT = False
    for n in range(30):  # someone at 203.0.113.7 guesses names; the proxy is 10.0.0.2 for everyone
        Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.7").post(
            "/accounts/login/", {"username": f"user{n}", "password": "x"}, secure=True)
    other = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.4").post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery"}, secure=True)
    assert other.status_code == 302, "another person behind the same proxy logs in"
    spoofed = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.7").post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery"}, secure=True)
    assert spoofed.status_code == 429, "a forged first entry does not escape: the proxy's own entry counts"
