"""The OpenAPI document: served, valid 3.1, covers every route, rendered as docs; fuzzed for 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import get_resolver
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from flux_studio.api import openapi, views_predictions

pytestmark = pytest.mark.django_db


def test_document_is_served_and_covers_every_api_route(client):
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["servers"][0]["url"] == "http://testserver/api/v1"
    documented = {path.replace("{id}", "<int:pk>") for path in doc["paths"]}
    api_routes = [p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/"][0].url_patterns
    json_routes = {str(r.pattern) for r in api_routes} - {"openapi.json", "docs/", "tokens/", "tokens/<int:pk>/revoke/",
                                                          "tokens/webhook-secret/rotate/", "^.*$"}
    assert len(json_routes) == len(doc["paths"])
    assert {"/trainings", "/predictions", "/files", "/models"} <= set(doc["paths"])
    assert all(path.startswith("/") for path in documented)


def test_the_document_names_the_statuses_a_caller_must_handle():
    paths = openapi.document()["paths"]
    assert "409" in paths["/predictions/{id}"]["delete"]["responses"], "a running prediction is not deleted"
    for code in ("400", "413", "415", "422"):  # a broken, too large or wrongly typed body
        assert code in paths["/trainings"]["post"]["responses"], code
    assert "400" not in paths["/trainings"]["get"]["responses"], "no body, no body errors"


def test_schemathesis_accepts_the_document():
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len([m for m in item if m != "parameters"]) for item in openapi.PATHS.values())


def test_docs_page_renders_without_scripts_from_elsewhere(client):
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "POST /api/v1/trainings" in html and "TrainingInput" in html and "webhook-signature" in html
    assert "cdn" not in html.lower() and "https://" not in html.replace("https://flux-studio.local", "")


@pytest.fixture
def api_schema(db, alice, finished_job, make_dataset, settings, monkeypatch):
    """The live app over WSGI, with data for alice so some ids exist."""
    from django.core.handlers.wsgi import WSGIHandler

    settings.API_RATE_LIMIT_PER_MINUTE = 100_000
    cache.clear()
    monkeypatch.setattr(views_predictions, "MAX_WAIT_S", 0)  # never hold a fuzzed request
    finished_job(alice)
    make_dataset(alice, n=1)
    # Like Django's test client: keep the test transaction's connection open between requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


MIN_REQUESTS_PER_OPERATION = 8


def _fuzz(operation, headers: dict[str, str], statuses: list[int]) -> tuple[int, str]:
    """Bounded Hypothesis run for one operation (schemathesis' pytest plugin does not run on pytest 9).

    Returns how many requests were sent and the first failure, if any. Any exception counts: a
    server error found by the check, and equally a harness error (a strategy that cannot be
    built, an unsatisfiable schema) that would otherwise mean this operation was never tested.
    """
    sent = 0

    @hypothesis_settings(max_examples=12, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy())
    def run(case) -> None:
        nonlocal sent
        response = case.call(headers=headers)
        sent += 1
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    try:
        run()
    except Exception as exc:
        return sent, f"{operation.label}: {type(exc).__name__}: {str(exc)[:800]}"
    return sent, ""


@pytest.mark.slow
def test_fuzzing_finds_no_server_error(api_schema, alice_token):
    statuses: list[int] = []
    sent: dict[str, int] = {}
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == sum(len([m for m in item if m != "parameters"]) for item in openapi.PATHS.values())
    for operation in operations:
        sent[operation.label], failure = _fuzz(operation, {"Authorization": f"Bearer {alice_token}"}, statuses)
        if failure:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)
    # a public operation that takes no input at all has a single request to send
    single = {f"{method.upper()} {path}" for path, item in openapi.PATHS.items() for method, operation in item.items()
              if method != "parameters" and not item.get("parameters") and not operation.get("parameters")
              and not operation.get("requestBody") and {} in operation.get("security", [])}
    assert single == {"GET /models/filters"}, single
    starved = {label: n for label, n in sent.items() if n < MIN_REQUESTS_PER_OPERATION and label not in single}
    assert not starved, f"operations the fuzzer hardly exercised (requests sent): {starved}"
    assert {200, 201, 204, 404, 422} <= set(statuses), sorted(set(statuses))


def test_the_fuzz_harness_reports_its_own_errors():
    """A strategy that breaks before any request is a failure, not a silently skipped operation."""
    from hypothesis import strategies

    def broken() -> None:
        raise RuntimeError("cannot build a case")

    class BrokenOperation:
        label = "GET /broken"

        def as_strategy(self):
            return strategies.builds(broken)

    sent, failure = _fuzz(BrokenOperation(), {}, [])
    assert sent == 0 and "GET /broken: RuntimeError: cannot build a case" in failure
