"""The trainings list: newest first, 25 to a page with page links, and a filter by state that the
page links keep; someone else's trainings never show."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db

STATES = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.QUEUED, JobState.TRAINING]


def make_jobs(owner, n: int) -> list[TrainingJob]:
    """n trainings, each a minute newer than the one before, their states in turn."""
    made = TrainingJob.objects.bulk_create([
        TrainingJob(owner=owner, name=f"{owner.username} {i}", state=STATES[i % len(STATES)], base_model="tiny",
                    trigger_word="zxq", config={"preset": "fast"}, total_steps=10) for i in range(n)])
    start = timezone.now() - timedelta(days=1)
    for i, job in enumerate(TrainingJob.objects.filter(owner=owner).order_by("pk")):
        TrainingJob.objects.filter(pk=job.pk).update(created_at=start + timedelta(minutes=i))
    return made


def listed(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/trainings/(\d+)/">', html)]


def test_the_list_shows_25_a_page_newest_first_with_page_links(alice_client, alice, bob):
    make_jobs(alice, 60)
    make_jobs(bob, 3)
    newest_first = list(TrainingJob.objects.filter(owner=alice).order_by("-created_at").values_list("pk", flat=True))
    url = reverse("trainer:job_list")
    first = alice_client.get(url).content.decode()
    assert listed(first) == newest_first[:25]
    assert "Page 1 of 3 · 60 trainings" in first
    assert 'href="?page=2" rel="next" aria-label="Next page, older trainings"' in first and 'rel="prev"' not in first
    last = alice_client.get(url, {"page": 3}).content.decode()
    assert listed(last) == newest_first[50:] and 'href="?page=2" rel="prev"' in last and 'rel="next"' not in last
    assert listed(alice_client.get(url, {"page": "999"}).content.decode()) == newest_first[50:]
    assert listed(alice_client.get(url, {"page": "x"}).content.decode()) == newest_first[:25]


@pytest.mark.parametrize("shown, states", [
    ("running", {JobState.QUEUED, JobState.STARTING, JobState.TRAINING}),
    ("finished", {JobState.SUCCEEDED}),
    ("stopped", {JobState.FAILED, JobState.CANCELED}),
])
def test_the_state_filter_shows_those_trainings_and_the_page_links_keep_it(alice_client, alice, bob, shown, states):
    make_jobs(alice, 150)
    make_jobs(bob, 10)
    wanted = list(TrainingJob.objects.filter(owner=alice, state__in=states).order_by("-created_at")
                  .values_list("pk", flat=True))
    assert len(wanted) > 25
    page = alice_client.get(reverse("trainer:job_list"), {"state": shown}).content.decode()
    assert listed(page) == wanted[:25]
    assert f'href="?state={shown}&amp;page=2" rel="next"' in page
    assert re.search(r'<strong aria-current="page">[^<]+</strong>', page)
    assert listed(alice_client.get(reverse("trainer:job_list"), {"state": shown, "page": 2}).content.decode()) == wanted[25:50]


def test_a_filter_with_no_trainings_says_so_and_offers_all(alice_client, alice):
    TrainingJob.objects.create(owner=alice, name="done", state=JobState.SUCCEEDED, base_model="tiny", trigger_word="zxq",
                               config={"preset": "fast"}, total_steps=10)
    page = alice_client.get(reverse("trainer:job_list"), {"state": "stopped"}).content.decode()
    assert listed(page) == [] and "No trainings here." in page and 'id="job-pages"' not in page
