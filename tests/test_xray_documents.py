"""X-Ray documents that X-Ray draws correctly: database nodes, documents within the UDP limit, the
platform they ran on. Everything is read from the datagrams the fake daemon receives."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from aws_xray_sdk.core.plugins import ec2_plugin

from cruddur.telemetry import settings as telemetry_settings
from cruddur.telemetry.xray import MAX_DATAGRAM_BYTES, MAX_SANITIZED_QUERY_CHARS
from tests.support.recording import RecordingServer
from tests.support.xray_daemon import walk

#: What every segment document needs, and a subsegment sent on its own as well
#: (https://docs.aws.amazon.com/xray/latest/devguide/xray-api-segmentdocuments.html).
SEGMENT_FIELDS = {"name", "id", "trace_id", "start_time", "end_time"}
STANDALONE_SUBSEGMENT_FIELDS = SEGMENT_FIELDS | {"type", "parent_id"}


@pytest.fixture
def traced_app(make_app, span_exporter, xray_daemon):
    return make_app({"TELEMETRY_SPAN_EXPORTER": span_exporter, "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})


def entities(xray_daemon) -> list[dict]:
    """Every segment and subsegment received, whether inline in a document or sent on its own."""
    return [entity for document in list(xray_daemon.documents) for _, entity in walk(document)]


def wait_for_entities(xray_daemon, predicate, timeout: float = 5) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate(entities(xray_daemon)):
        time.sleep(0.01)
    return entities(xray_daemon)


def make_queries(app, monkeypatch, count: int, length: int) -> None:
    """The home feed runs `count` queries of `length` characters each (as a store with long SQL would)."""
    tracing = app.extensions["cruddur"].telemetry.tracing

    def many_queries(now):
        for number in range(count):
            statement = f"SELECT /* query {number} */ " + "x" * length
            with tracing.query("SELECT", statement[:length], app.extensions["cruddur"].deps.store.database):
                pass
        return []

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "home_activities", many_queries)


def test_sql_subsegments_are_named_after_the_database_and_spans_after_the_operation(
    traced_app, span_exporter, xray_daemon
):
    database = traced_app.extensions["cruddur"].deps.store.database
    traced_app.test_client().get("/api/activities/home")
    [segment] = xray_daemon.wait_for_segments(1)
    sql = [entity for _, entity in walk(segment) if "sql" in entity]
    assert sql, "the feed runs queries"
    assert {entity["name"] for entity in sql} == {database.namespace}, "one database, one node on the service map"
    assert all(entity["namespace"] == "remote" and entity["sql"]["url"] == database.url for entity in sql)
    queries = [span for span in span_exporter.get_finished_spans() if "db.query.text" in span.attributes]
    assert {span.name for span in queries} == {f"SELECT {database.namespace}"}


@pytest.mark.parametrize(
    ("count", "length"),
    [
        (25, 3000),  # the report: nothing at all reached the daemon
        (29, 3000),  # still over 64 KB once each query is truncated, under the SDK's count streaming
        (40, 3000),  # the SDK's count streaming (a burst of 30 datagrams) and size splitting together
    ],
)
def test_no_segment_is_lost_to_the_udp_limit(traced_app, xray_daemon, monkeypatch, caplog, count, length):
    make_queries(traced_app, monkeypatch, count, length)
    with caplog.at_level(logging.WARNING, logger="cruddur.telemetry.xray"):
        response = traced_app.test_client().get("/api/activities/home")
        assert response.status_code == 200
        found = wait_for_entities(
            xray_daemon, lambda found: sum("sql" in e for e in found) >= count and xray_daemon.segments()
        )

    assert not caplog.records, [record.getMessage() for record in caplog.records]
    assert xray_daemon.malformed == []
    assert xray_daemon.sizes and max(xray_daemon.sizes) <= MAX_DATAGRAM_BYTES
    assert len(xray_daemon.sizes) < count, "documents are packed, not one datagram per query"
    queries = [entity for entity in found if "sql" in entity]
    assert len({query["id"] for query in queries}) == count, "every query's subsegment arrives, once"
    assert all(len(query["sql"]["sanitized_query"]) <= MAX_SANITIZED_QUERY_CHARS + 1 for query in queries)
    assert all(query["sql"]["sanitized_query"].endswith("…") for query in queries)

    [segment] = xray_daemon.segments()
    trace_id = response.headers["X-Amzn-Trace-Id"].split(";")[0].removeprefix("Root=")
    ids = {entity["id"] for entity in found}
    for document in xray_daemon.documents:
        assert document["trace_id"] == trace_id
        if document.get("type") == "subsegment":
            assert set(document) >= STANDALONE_SUBSEGMENT_FIELDS, document.keys()
            assert document["parent_id"] in ids, "a subsegment sent alone names a parent that arrived"
        else:
            assert set(document) >= SEGMENT_FIELDS
    assert segment["http"]["response"]["status"] == 200


def test_a_document_over_the_limit_on_its_own_is_named_as_such_and_the_rest_arrives(
    traced_app, xray_daemon, monkeypatch, caplog
):
    tracing = traced_app.extensions["cruddur"].telemetry.tracing
    database = traced_app.extensions["cruddur"].deps.store.database

    def huge_detail(now):
        with tracing.span("huge") as span:
            span.detail("app.blob", "x" * 70_000)
        with tracing.query("SELECT", "SELECT 1", database):
            pass
        return []

    monkeypatch.setattr(traced_app.extensions["cruddur"].deps.store, "home_activities", huge_detail)
    with caplog.at_level(logging.WARNING, logger="cruddur.telemetry.xray"):
        traced_app.test_client().get("/api/activities/home")
        found = wait_for_entities(
            xray_daemon, lambda found: {"backend-flask", database.namespace} <= {e["name"] for e in found}
        )

    [warning] = [record.getMessage() for record in caplog.records]
    assert "'huge'" in warning and f"over the {MAX_DATAGRAM_BYTES}-byte UDP datagram limit" in warning
    assert "not taking segments" not in warning
    names = {entity["name"] for entity in found}
    assert {"backend-flask", "home-activities", database.namespace} <= names and "huge" not in names
    assert max(xray_daemon.sizes) <= MAX_DATAGRAM_BYTES


# --- the platform: origin and metadata on ECS and EC2, no network call anywhere else ---------------


@pytest.fixture
def imds(monkeypatch) -> RecordingServer:
    """A stand-in for the EC2 instance metadata service, where the SDK's EC2 plugin looks for it."""
    server = RecordingServer(
        routes={
            "/latest/api/token": (200, "fake-imds-session"),
            "/latest/dynamic/instance-identity/document": (
                200,
                {
                    "instanceId": "i-0fa4e0000000000c0",
                    "availabilityZone": "us-east-1a",
                    "instanceType": "t3.micro",
                    "imageId": "ami-00000000000000000",
                },
            ),
        }
    )
    monkeypatch.setattr(ec2_plugin, "IMDS_URL", f"{server.url}/latest/")
    yield server
    server.close()


@pytest.fixture
def dmi(tmp_path, monkeypatch):
    """Point the EC2 markers at files this test writes: `dmi("Amazon EC2")` says EC2 (Nitro)."""
    vendor = tmp_path / "sys_vendor"
    vendor.write_text("QEMU\n")
    monkeypatch.setattr(telemetry_settings, "EC2_MARKERS", ((vendor, "Amazon EC2"), (tmp_path / "no-uuid", "ec2")))
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    return lambda text: vendor.write_text(text)


def one_segment(make_app, xray_daemon) -> dict:
    app = make_app({"AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})
    app.test_client().get("/api/activities/home")
    [segment] = xray_daemon.wait_for_segments(1)
    return segment


def test_off_aws_segments_carry_no_origin_and_nothing_asks_for_metadata(make_app, xray_daemon, imds, dmi):
    segment = one_segment(make_app, xray_daemon)
    assert "origin" not in segment
    assert not {"ec2", "ecs"} & set(segment.get("aws", {}))
    assert imds.requests == []


def test_on_ecs_segments_carry_the_container_origin_without_a_network_call(
    make_app, xray_daemon, imds, dmi, monkeypatch
):
    task_metadata = RecordingServer()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"{task_metadata.url}/v4/0123456789abcdef-1234567890")
    dmi("Amazon EC2\n")  # ECS on EC2: the container is the origin
    try:
        segment = one_segment(make_app, xray_daemon)
    finally:
        task_metadata.close()
    assert segment["origin"] == "AWS::ECS::Container"
    assert segment["aws"]["ecs"] == {"container": socket.gethostname()}
    assert task_metadata.requests == [] and imds.requests == []


def test_on_ec2_segments_carry_the_instance_origin_and_metadata(make_app, xray_daemon, imds, dmi):
    dmi("Amazon EC2\n")
    segment = one_segment(make_app, xray_daemon)
    assert segment["origin"] == "AWS::EC2::Instance"
    assert segment["aws"]["ec2"]["instance_id"] == "i-0fa4e0000000000c0"
    assert segment["aws"]["ec2"]["availability_zone"] == "us-east-1a"
    assert [request.method for request in imds.requests] == ["PUT", "GET"], "at start-up only, not per request"


def test_on_ec2_the_metadata_call_obeys_aws_ec2_metadata_disabled(make_app, xray_daemon, imds, dmi, monkeypatch):
    dmi("Amazon EC2\n")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    segment = one_segment(make_app, xray_daemon)
    assert "origin" not in segment and imds.requests == []
