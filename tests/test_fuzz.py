"""Fuzzing: arbitrary requests never get a 5xx, HTML, or an answer `openapi-3.0.yml` does not describe.

Two kinds: schemathesis generates requests for every documented operation from the document itself (valid
ones and deliberately invalid ones, plus methods a path does not take) and checks each response against it;
Hypothesis throws arbitrary JSON values and arbitrary bytes at each POST route. One app and one database
serve the whole module. The example counts keep the module to a few seconds; raise `MAX_EXAMPLES` and
`FUZZ_EXAMPLES` locally when hunting (a few thousand take about a minute).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import example, given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder

from cruddur import create_app
from cruddur.config import DEFAULT_MAX_BODY_BYTES
from tests.conftest import ISOLATED_PREFIXES
from tests.support.cognito import FakeUserPool

SPEC_PATH = Path(__file__).resolve().parents[1] / "backend-flask" / "openapi-3.0.yml"
#: Generated requests per documented operation (schemathesis) and per POST route and test (Hypothesis).
MAX_EXAMPLES = 50
FUZZ_EXAMPLES = 100
CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
POST_ROUTES = ["/api/activities", f"/api/activities/{CLOUD_IS_FUN}/reply", "/api/messages"]
ERROR_FIELDS = {"status", "error", "message", "errors", "trace_id"}
#: What a POST route may answer to any body at all: processed, refused by a rule, or not parsed.
POST_STATUSES = {200, 400, 413, 415, 422}

SCHEMATHESIS_CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {
            # A request the document calls valid is parsed and processed: answered, not found, or refused by a
            # service's rule (the document leaves field types and lengths to the services), never a 400/415.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "422"]},
        },
    }
)
schema = schemathesis.openapi.from_path(SPEC_PATH, config=SCHEMATHESIS_CONFIG)


@pytest.fixture(scope="module")
def user_pool() -> Iterator[FakeUserPool]:
    pool = FakeUserPool()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, user_pool: FakeUserPool) -> Iterator[Flask]:
    """One app for the module, on its own database, built without the developer's telemetry settings, and
    with Cognito (as deployed): the requests carry a valid token unless a check leaves it out on purpose."""
    database = tmp_path_factory.mktemp("fuzz") / "cruddur.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(ISOLATED_PREFIXES):
                patch.delenv(name)
        app = create_app({"TESTING": True, "DATABASE_URL": str(database), **user_pool.settings})
    yield app
    app.extensions["cruddur"].telemetry.shutdown()


@pytest.fixture(scope="module")
def authorization(user_pool: FakeUserPool) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_pool.token(username='andrewbrown')}"}


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_path(SPEC_PATH)


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, fuzz_app: Flask, authorization: dict[str, str]
) -> None:
    served = {rule.rule for rule in fuzz_app.url_map.iter_rules()}
    if case.operation.path == "/rollbar/test" and case.operation.path not in served:
        pytest.skip("the Rollbar test route is documented ahead of the work that adds it")
    # Send over WSGI, the checks' own probes (a write without the token, with a wrong one) too: what
    # `schemathesis.openapi.from_wsgi` sets on a schema it loads (the API serves no document to load).
    case.operation.schema.app = case.operation.app = fuzz_app
    case.call_and_validate(headers=authorization)


# --- arbitrary bodies on the POST routes -----------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
#: Values that get past some rules, so the later ones (and the 200) are reached too.
plausible_values = st.sampled_from(["7-days", "1-hour", "forever", "lore", "bayko", "andrewbrown", "hi", "", "  "])
field_values = json_values | plausible_values | st.text(min_size=250, max_size=1100)
field_names = st.sampled_from(["message", "ttl", "user_receiver_handle"]) | st.text(max_size=10)
bodies = json_values | st.dictionaries(field_names, field_values, max_size=4)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ]
)

fuzz_settings = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None)


def is_json_type(content_type: str) -> bool:
    mimetype = content_type.split(";")[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def expected_refusal(data: bytes, content_type: str | None) -> tuple[int, str] | None:
    """How the API must refuse a body before any service sees it, or None when a service must see it."""
    if content_type is None or not is_json_type(content_type):
        return 415, "unsupported_media_type"
    if len(data) > DEFAULT_MAX_BODY_BYTES:
        return 413, "payload_too_large"
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return 400, "malformed_json"
    return None if isinstance(parsed, dict) else (400, "body_not_object")


def post_and_check(
    app: Flask, openapi: OpenAPI, path: str, data: bytes, content_type: str | None, authorization: dict[str, str]
) -> None:
    headers = {**authorization} if content_type is None else {**authorization, "Content-Type": content_type}
    response = app.test_client().post(path, data=data, headers=headers)
    assert response.status_code in POST_STATUSES, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    if response.status_code != 200:
        assert set(body) == ERROR_FIELDS
        assert body["status"] == response.status_code
        assert body["errors"]
    refusal = expected_refusal(data, content_type)
    if refusal is None:
        assert response.status_code in {200, 422}, body
    else:
        assert (response.status_code, body["error"]) == refusal
    request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, method="POST", headers=authorization).get_request())
    openapi.validate_response(request, WerkzeugOpenAPIResponse(response))


@pytest.mark.parametrize("path", POST_ROUTES)
@fuzz_settings
@given(body=bodies)
def test_any_json_value_is_answered_as_documented(
    fuzz_app: Flask, openapi: OpenAPI, authorization: dict[str, str], path: str, body: object
) -> None:
    post_and_check(fuzz_app, openapi, path, json.dumps(body).encode(), "application/json", authorization)


@pytest.mark.parametrize("path", POST_ROUTES)
@fuzz_settings
@given(data=st.binary(max_size=200) | bodies.map(lambda body: json.dumps(body).encode()), content_type=content_types)
@example(data=b'{"message": "' + b"x" * 70_000 + b'"}', content_type="application/json")
@example(data=b'{"message": "\xff"}', content_type="application/json")
@example(data=b"[" * 5000, content_type="application/json")
@example(data=b"", content_type="application/json")
@example(data=b'{"message": "hi", "ttl": "1-day"}', content_type="text/plain")
def test_any_bytes_are_answered_as_documented(
    fuzz_app: Flask, openapi: OpenAPI, authorization: dict[str, str], path: str, data: bytes, content_type: str | None
) -> None:
    post_and_check(fuzz_app, openapi, path, data, content_type, authorization)
