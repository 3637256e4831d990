"""`backend-flask/openapi-3.0.yml` is the API's contract: valid, complete, and what the app really answers.

Each representative request goes to the real app. openapi-core then checks the response (status, content
type, headers, body) against the document, and checks that the document accepts the request exactly when
the API processes it: what the API refuses before any service runs (400, 415, a malformed uuid's 404) the
document forbids too, and what a service refuses with 422 the document allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from werkzeug.test import EnvironBuilder

from cruddur.store import REPLY_DEPTH, Store, StoreUnavailable

SPEC_PATH = Path(__file__).resolve().parents[1] / "backend-flask" / "openapi-3.0.yml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Documented routes that later work adds; until then the app may not serve them.
NOT_YET_SERVED = {"/rollbar/test"}
#: Never traced (load balancers call it every few seconds): no trace header, no trace id.
UNTRACED = {"/api/health"}
CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
WORF_REPLY = "26e12864-1c26-5c3a-9658-97a10f8fea67"
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"
TOO_BIG = '{"message": "' + "x" * 70_000 + '"}'


@pytest.fixture
def app(make_app, user_pool):
    """The API as deployed, with Cognito: every POST needs a token, as the document says."""
    return make_app(user_pool.settings)


@pytest.fixture
def client(app, user_pool):
    """A client that sends a valid token with every request (as the current user, `andrewbrown`)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user_pool.token(username='andrewbrown')}"
    return client


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def openapi(spec: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(spec)


def deref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s (`#/components/...`) to the object they name."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^{}]+\})", template)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts))


def find_operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The operation serving a concrete path: an exact path first, then templates in document order."""
    candidates = operations(spec)
    if (method, path) in candidates:
        return candidates[(method, path)]
    for (documented_method, template), operation in candidates.items():
        if documented_method == method and template_regex(template).fullmatch(path):
            return operation
    raise AssertionError(f"{method} {path} is not documented")


def flask_to_openapi(rule: str) -> str:
    """`/api/activities/<uuid:activity_uuid>` -> `/api/activities/{activity_uuid}`."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def error_validator(spec: dict[str, Any]) -> OAS30Validator:
    return OAS30Validator(spec["components"]["schemas"]["Error"])


# --- the document itself ---------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_0_3(spec, openapi):
    validate(spec)
    assert spec["openapi"] == "3.0.3"
    description = spec["info"]["description"]
    assert "CRUDDUR_USER_HANDLE" in description
    assert "andrewbrown" in description
    assert "X-Amzn-Trace-Id" in description


def test_every_route_is_documented_and_every_documented_route_is_served(app, spec):
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            served.setdefault(flask_to_openapi(rule.rule), set()).update(rule.methods - {"HEAD", "OPTIONS"})
    documented: dict[str, set[str]] = {}
    for method, path in operations(spec):
        documented.setdefault(path, set()).add(method)
    for path in NOT_YET_SERVED - set(served):
        documented.pop(path)
    assert served == documented


def test_every_traced_response_documents_the_trace_header_and_every_error_the_one_error_schema(spec):
    responses = [
        (path, f"{method} {path} {status}", status, response)
        for (method, path), operation in operations(spec).items()
        for status, response in operation["responses"].items()
    ]
    responses += [(None, name, "4XX", response) for name, response in spec["components"]["responses"].items()]
    for (method, path), operation in operations(spec).items():
        assert "500" in operation["responses"], f"{method} {path}"
    for path, where, status, response in responses:
        response = deref(spec, response)
        if path in UNTRACED:
            assert "X-Amzn-Trace-Id" not in response.get("headers", {}), where
        else:
            assert response["headers"]["X-Amzn-Trace-Id"] == {"$ref": "#/components/headers/X-Amzn-Trace-Id"}, where
        if not status.startswith(("2", "3")):
            error_schema = {"$ref": "#/components/schemas/Error"}
            assert response["content"] == {"application/json": {"schema": error_schema}}, where


# --- real responses ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One representative request and what the app answers to it."""

    method: str
    path: str
    status: int
    errors: tuple[str, ...] = ()
    request_valid: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        detail = ",".join(self.errors) or self.kwargs.get("content_type", "")
        return f"{self.method} {self.path[:60]} {self.status} {detail}".strip()


def post(path: str, body: object, status: int, *errors: str) -> Call:
    return Call("POST", path, status, errors, kwargs={"json": body})


def raw_post(path: str, data: str, content_type: str | None, status: int, *errors: str, valid: bool) -> Call:
    kwargs = {"data": data} if content_type is None else {"data": data, "content_type": content_type}
    return Call("POST", path, status, errors, request_valid=valid, kwargs=kwargs)


POST_ROUTES = {
    "/api/activities": {"message": "Crud that expires", "ttl": "1-hour"},
    f"/api/activities/{CLOUD_IS_FUN}/reply": {"message": "Qapla'!"},
    "/api/messages": {"message": "Brother, no.", "user_receiver_handle": "lore"},
}

SUCCESSES = [
    Call("GET", "/api/activities/home", 200),
    Call("GET", "/api/activities/notifications", 200),
    Call("GET", "/api/activities/@worf", 200),
    Call("GET", "/api/activities/search", 200, kwargs={"query_string": {"term": "prune"}}),
    Call("GET", "/api/activities/search", 200, kwargs={"query_string": {"term": "nothing like this"}}),
    *(post(path, body, 200) for path, body in POST_ROUTES.items()),
    Call("GET", f"/api/activities/{CLOUD_IS_FUN}", 200),
    Call("GET", f"/api/activities/{CLOUD_IS_FUN.upper()}", 200),
    Call("GET", "/api/message_groups", 200),
    Call("GET", "/api/messages/@bayko", 200),
    Call("GET", "/api/messages/@worf", 200),
    Call("GET", "/api/health", 200),
]

ERRORS = [
    Call("GET", "/api/activities/@nobody", 404, ("user_not_found",)),
    Call("GET", "/api/activities/search", 422, ("search_term_blank",)),
    Call("GET", "/api/activities/search", 422, ("search_term_blank",), kwargs={"query_string": {"term": "  "}}),
    Call(
        "GET",
        "/api/activities/search",
        422,
        ("search_term_exceed_max_chars",),
        kwargs={"query_string": {"term": "t" * 281}},
    ),
    Call("GET", f"/api/activities/{UNKNOWN_UUID}", 404, ("activity_not_found",)),
    Call("GET", "/api/activities/not-a-uuid", 404, ("not_found",), request_valid=False),
    Call("GET", "/api/messages/@nobody", 404, ("user_not_found",)),
    post("/api/activities", {}, 422, "message_blank", "ttl_blank"),
    post("/api/activities", {"message": "   ", "ttl": ""}, 422, "message_blank", "ttl_blank"),
    post("/api/activities", {"message": 42, "ttl": 7}, 422, "message_invalid", "ttl_invalid"),
    post("/api/activities", {"message": "x" * 281, "ttl": "2-weeks"}, 422, "message_exceed_max_chars", "ttl_invalid"),
    raw_post(
        "/api/activities",
        '{"message": "\\ud800", "ttl": "1-day"}',
        "application/json",
        422,
        "message_invalid",
        valid=True,
    ),
    post(f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": None}, 422, "message_blank"),
    post(f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": ["a"]}, 422, "message_invalid"),
    post(f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": "y" * 1025}, 422, "message_exceed_max_chars"),
    post(f"/api/activities/{UNKNOWN_UUID}/reply", {"message": "hello?"}, 404, "activity_not_found"),
    post(f"/api/activities/{UNKNOWN_UUID}/reply", {}, 422, "message_blank"),
    Call("POST", "/api/activities/not-a-uuid/reply", 404, ("not_found",), False, {"json": {"message": "hi"}}),
    post("/api/messages", {}, 422, "message_blank", "user_receiver_handle_blank"),
    post(
        "/api/messages",
        {"message": 1, "user_receiver_handle": 5},
        422,
        "message_invalid",
        "user_receiver_handle_invalid",
    ),
    post(
        "/api/messages",
        {"message": "m" * 1025, "user_receiver_handle": "h" * 65},
        422,
        "message_exceed_max_chars",
        "user_receiver_handle_exceed_max_chars",
    ),
    post("/api/messages", {"message": "hi", "user_receiver_handle": "nobody"}, 422, "user_receiver_handle_unknown"),
    *(
        call
        for path in POST_ROUTES
        for call in (
            raw_post(path, "{not json", "application/json", 400, "malformed_json", valid=False),
            raw_post(path, '["a list"]', "application/json", 400, "body_not_object", valid=False),
            raw_post(path, "null", "application/json", 400, "body_not_object", valid=False),
            raw_post(path, TOO_BIG, "application/json", 413, "payload_too_large", valid=True),
            raw_post(
                path, "message=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type", valid=False
            ),
            raw_post(path, "", None, 415, "unsupported_media_type", valid=False),
        )
    ),
]


def send(client, call: Call):
    """Send the call to the app, and build the same request again for openapi-core (the app consumed the body)."""
    response = client.open(call.path, method=call.method, **call.kwargs)
    builder = EnvironBuilder(path=call.path, method=call.method, environ_base=client.environ_base, **call.kwargs)
    try:
        request = WerkzeugOpenAPIRequest(builder.get_request())
    finally:
        builder.close()
    return request, response


def assert_traced_as_documented(call: Call, response) -> None:
    """The trace header is on every response but the health check's, and an error's `trace_id` is its id."""
    header = response.headers.get("X-Amzn-Trace-Id")
    trace_id = response.get_json()["trace_id"] if response.status_code >= 400 else None
    if call.path in UNTRACED:
        assert header is None
        assert trace_id is None
        return
    assert header is not None
    if response.status_code >= 400:
        root = header.split(";")[0].removeprefix("Root=1-").replace("-", "")
        assert trace_id == root


def assert_conforms(spec, openapi, client, call: Call):
    """Send the call; check the response against the document, and the document's verdict on the request."""
    request, response = send(client, call)
    assert response.status_code == call.status, response.get_data(as_text=True)
    openapi.validate_response(request, WerkzeugOpenAPIResponse(response))
    assert_traced_as_documented(call, response)
    request_errors = list(openapi.iter_request_errors(request))
    if call.request_valid:
        assert request_errors == [], "the document forbids a request the API processes"
    else:
        assert request_errors, "the document allows a request the API refuses before processing it"
    if call.status < 400:
        return response
    body = response.get_json()
    assert body["status"] == call.status
    assert body["errors"] == list(call.errors)
    if call.status == 422:
        assert body["error"] == "validation_failed"
    else:
        assert [body["error"]] == body["errors"]
    operation = find_operation(spec, call.method, call.path)
    description = deref(spec, operation["responses"][str(call.status)])["description"]
    for code in {body["error"], *body["errors"]}:
        assert f"`{code}`" in description, f"{code} is not documented for {call.method} {call.path} {call.status}"
    return response


@pytest.mark.parametrize("call", SUCCESSES, ids=lambda call: call.id)
def test_every_success_conforms(spec, openapi, client, call):
    assert_conforms(spec, openapi, client, call)


@pytest.mark.parametrize("call", ERRORS, ids=lambda call: call.id)
def test_every_documented_error_conforms(spec, openapi, client, call):
    assert_conforms(spec, openapi, client, call)


def test_nested_replies_conform(spec, openapi, client):
    reply = assert_conforms(spec, openapi, client, post(f"/api/activities/{WORF_REPLY}/reply", {"message": "Hm."}, 200))
    shown = assert_conforms(spec, openapi, client, Call("GET", f"/api/activities/{CLOUD_IS_FUN}", 200))
    assert shown.get_json()["replies"][0]["replies"] == [reply.get_json()]


def test_a_long_reply_chain_is_embedded_to_the_documented_depth_and_continues(spec, openapi, client):
    chain = [CLOUD_IS_FUN]
    for n in range(500):  # deep enough that embedding it all overflowed the JSON encoder (a 500)
        response = client.post(f"/api/activities/{chain[-1]}/reply", json={"message": f"and {n}"})
        chain.append(response.get_json()["uuid"])
    for call in (Call("GET", "/api/activities/home", 200), Call("GET", f"/api/activities/{CLOUD_IS_FUN}", 200)):
        assert_conforms(spec, openapi, client, call)
    shown = client.get(f"/api/activities/{CLOUD_IS_FUN}").get_json()
    deepest = shown
    for _ in range(REPLY_DEPTH):
        deepest = deepest["replies"][-1]
    assert deepest["uuid"] == chain[REPLY_DEPTH]
    assert (deepest["replies"], deepest["replies_count"]) == ([], 1)
    continued = client.get(f"/api/activities/{deepest['uuid']}").get_json()
    assert continued["replies"][0]["uuid"] == chain[REPLY_DEPTH + 1]
    assert f"{REPLY_DEPTH} levels" in spec["components"]["schemas"]["Activity"]["properties"]["replies"]["description"]


def token_refusals(user_pool) -> list[Call]:
    """Each way a token is refused, on a write and on a read, sent by a client with no token of its own
    (direct messages, like writes, need one)."""
    expired = user_pool.token(username="andrewbrown", exp=1_700_000_000, iat=1_699_996_400)
    forged = user_pool.token(username="andrewbrown").rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    calls = []
    for path, body in POST_ROUTES.items():
        calls += [
            Call("POST", path, 401, ("token_missing",), request_valid=False, kwargs={"json": body}),
            Call("POST", path, 401, ("token_invalid",), kwargs={"json": body, "headers": bearer(forged)}),
            Call("POST", path, 401, ("token_expired",), kwargs={"json": body, "headers": bearer(expired)}),
        ]
    for call in SUCCESSES:
        if call.method == "GET" and call.path.startswith(("/api/message_groups", "/api/messages/")):
            calls.append(Call(call.method, call.path, 401, ("token_missing",), request_valid=False))
        if call.path not in UNTRACED:
            for token, code in ((forged, "token_invalid"), (expired, "token_expired")):
                calls.append(
                    Call(call.method, call.path, 401, (code,), kwargs={**call.kwargs, "headers": bearer(token)})
                )
    return calls


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_token_refusal_conforms_and_carries_the_bearer_challenge(spec, openapi, app, user_pool):
    bare = app.test_client()
    for call in token_refusals(user_pool):
        response = assert_conforms(spec, openapi, bare, call)
        challenge = response.headers["WWW-Authenticate"]
        sent_token = "headers" in call.kwargs
        assert challenge.startswith('Bearer realm="cruddur"') and ("invalid_token" in challenge) == sent_token


def test_the_health_check_never_looks_at_a_token(spec, openapi, app, user_pool):
    bare = app.test_client()
    call = Call("GET", "/api/health", 200, kwargs={"headers": bearer("not-a-token")})
    assert_conforms(spec, openapi, bare, call)


def test_without_cognito_a_write_needs_no_token_as_in_development(spec, openapi, make_app):
    development = make_app().test_client()
    path, body = next(iter(POST_ROUTES.items()))
    assert development.post(path, json=body).status_code == 200
    assert spec["paths"][path]["post"]["security"] == [{"cognito": []}]
    assert "In development without Cognito settings no token is needed" in spec["info"]["description"]


def broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the disk caught fire")


#: Every method of the store interface the services use.
STORE_METHODS = sorted(name for name, member in vars(Store).items() if callable(member) and not name.startswith("_"))


@pytest.mark.parametrize("call", SUCCESSES, ids=lambda call: call.id)
def test_a_failing_store_is_a_documented_500_or_503(spec, openapi, app, client, monkeypatch, call):
    store = app.extensions["cruddur"].deps.store
    for name in STORE_METHODS:
        monkeypatch.setattr(store, name, broken)
    if call.path == "/api/health":
        expected = Call(call.method, call.path, 503, ("database_unavailable",), kwargs=call.kwargs)
    else:
        expected = Call(call.method, call.path, 500, ("internal_error",), kwargs=call.kwargs)
    response = assert_conforms(spec, openapi, client, expected)
    assert "disk" not in response.get_json()["message"]


def unavailable(*args: object, **kwargs: object) -> None:
    raise StoreUnavailable("no database connection within 5 s")


@pytest.mark.parametrize("call", [call for call in SUCCESSES if call.path != "/rollbar/test"], ids=lambda call: call.id)
def test_a_database_that_does_not_answer_is_a_documented_503(spec, openapi, app, client, monkeypatch, call):
    store = app.extensions["cruddur"].deps.store
    for name in STORE_METHODS:
        monkeypatch.setattr(store, name, unavailable)
    expected = Call(call.method, call.path, 503, ("database_unavailable",), kwargs=call.kwargs)
    assert_conforms(spec, openapi, client, expected)


def test_an_unexpected_failure_in_health_is_a_documented_500(spec, openapi, client, monkeypatch):
    monkeypatch.setattr("cruddur.api.health.jsonify", broken)
    assert_conforms(spec, openapi, client, Call("GET", "/api/health", 500, ("internal_error",)))


def test_the_rollbar_helper_conforms_whether_or_not_it_exists_yet(spec, openapi, app, client, make_app):
    if not any(rule.rule == "/rollbar/test" for rule in app.url_map.iter_rules()):
        assert_conforms(spec, openapi, client, Call("GET", "/rollbar/test", 404, ("not_found",)))
        return
    response = assert_conforms(spec, openapi, client, Call("GET", "/rollbar/test", 200))
    assert response.get_data(as_text=True) == "Hello World!"
    production = make_app({"CRUDDUR_ENVIRONMENT": "production", "CRUDDUR_AUTH": "off"}).test_client()
    assert_conforms(spec, openapi, production, Call("GET", "/rollbar/test", 404, ("not_found",)))


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/activities/home", {"GET", "HEAD", "OPTIONS"}),
        ("GET", "/api/activities", {"POST", "OPTIONS"}),
        ("PUT", f"/api/activities/{CLOUD_IS_FUN}/reply", {"POST", "OPTIONS"}),
        ("PATCH", "/api/health", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_a_method_a_path_does_not_take_is_the_documented_405(spec, client, method, path, allowed):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert_traced_as_documented(Call(method, path, 405), response)
    assert response.mimetype == "application/json"
    error_validator(spec).validate(response.get_json())
    assert set(response.headers["Allow"].split(", ")) == allowed
    documented = spec["components"]["responses"]["MethodNotAllowed"]
    assert "Allow" in documented["headers"]
    assert "`method_not_allowed`" in documented["description"]
    assert response.get_json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/activities/home/extra", "/api/messages/@"])
def test_a_url_no_route_matches_is_the_documented_404(spec, client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert_traced_as_documented(Call("GET", path, 404), response)
    assert response.mimetype == "application/json"
    error_validator(spec).validate(response.get_json())
    assert response.get_json()["error"] == "not_found"
    assert "`not_found`" in spec["components"]["responses"]["NotFound"]["description"]
