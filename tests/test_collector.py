"""The OpenTelemetry Collector configs in otel/ and the compose profiles that run them, checked statically.

There is no Docker engine (and usually no collector) where the suite runs, so these tests read the
configs the way the collector does: each pipeline names components that are defined, the local
config reaches Jaeger, the X-Ray config has exactly the `awsxray` exporter with its region from
AWS_REGION and annotates the attributes the services really set. When an `otelcol-contrib` binary
is at hand (on PATH, or named by OTELCOL_CONTRIB), `otelcol-contrib validate` checks them too.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur.telemetry.settings import HONEYCOMB_DEFAULT_ENDPOINT
from tests.test_containers import compose_command, environment_of, host_default, load_compose, service

REPO = Path(__file__).resolve().parent.parent
OTEL = REPO / "otel"
LOCAL = OTEL / "collector-local.yaml"
XRAY = OTEL / "collector-xray.yaml"
HONEYCOMB = OTEL / "collector-honeycomb.yaml"
CRUDDUR = REPO / "backend-flask" / "cruddur"

CONTRIB_IMAGE = "otel/opentelemetry-collector-contrib"
JAEGER_IMAGES = ("jaegertracing/jaeger", "cr.jaegertracing.io/jaegertracing/jaeger", "jaegertracing/all-in-one")
#: Collector component types, by their current name and the deprecated alias the collector still accepts.
OTLP_GRPC_EXPORTER = {"otlp_grpc", "otlp"}
OTLP_HTTP_EXPORTER = {"otlp_http", "otlphttp"}
KNOWN_TYPES = {
    "receivers": {"otlp"},
    "processors": {"batch"},
    "exporters": OTLP_GRPC_EXPORTER | OTLP_HTTP_EXPORTER | {"awsxray"},
}
ALLOW_DOT_OFF = "--feature-gates=-exporter.xray.allowDot"

#: One request to each use case, and a refused and a missing one, so every `span.set` runs.
CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
REQUESTS = [
    ("get", "/api/activities/home", None),
    ("get", "/api/activities/notifications", None),
    ("get", "/api/activities/@worf", None),
    ("get", "/api/activities/search?term=fun", None),
    ("post", "/api/activities", {"message": "m", "ttl": "1-day"}),
    ("post", "/api/activities", {"message": "", "ttl": "never"}),
    ("get", f"/api/activities/{CLOUD_IS_FUN}", None),
    ("get", "/api/activities/00000000-0000-4000-8000-000000000000", None),
    ("post", f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": "m"}),
    ("get", "/api/message_groups", None),
    ("get", "/api/messages/@bayko", None),
    ("post", "/api/messages", {"message": "m", "user_receiver_handle": "lore"}),
]

INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\+)(?P<word>[^}]*))?\}")
COLLECTOR_ENV = re.compile(r"^\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\}$")


# --- readers -----------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Two `--config` files as the collector merges them: maps deeply, anything else replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def collector_config(*paths: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, load(path))
    return config


def component_type(component_id: str) -> str:
    """`otlp_grpc/jaeger` is a component of type `otlp_grpc` named `jaeger`."""
    return component_id.partition("/")[0]


def exporters_of_type(config: Mapping[str, Any], types: set[str]) -> dict[str, Any]:
    return {cid: settings or {} for cid, settings in config["exporters"].items() if component_type(cid) in types}


def env_reference(value: object) -> tuple[str, str | None]:
    """`${env:NAME:-default}` as (NAME, default); fails for anything else."""
    match = COLLECTOR_ENV.match(str(value))
    assert match, f"{value!r} is not an ${{env:...}} reference"
    return match["name"], match["default"]


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's `${NAME}` and `${NAME:-default}` (`${NAME:+replacement}` too, which v1 lacks)."""

    def replace(match: re.Match[str]) -> str:
        value = environ.get(match["name"], "")
        if match["op"] == ":-":
            return value or match["word"]
        if match["op"] == ":+":
            return match["word"] if value else ""
        return value

    return INTERPOLATION.sub(replace, text)


def mounts(name: str) -> dict[PurePosixPath, Path]:
    """A service's bind mounts: container path -> the file in the repository."""
    result = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        assert source.startswith("./"), f"{name}: {source} should be a file in the repository"
        result[PurePosixPath(target)] = (REPO / source).resolve()
    return result


def configs_given_to(name: str, environ: Mapping[str, str]) -> list[Path]:
    """The repository files a collector service reads, with the host environment `environ`."""
    mounted = mounts(name)
    files = []
    for argument in service(name)["command"]:
        flag, _, value = interpolate(argument, environ).partition("=")
        if flag == "--config":
            path = PurePosixPath(value.removeprefix("file:"))
            assert path in mounted, f"{name}: --config {path} is not a mounted file"
            files.append(mounted[path])
    return files


def span_set_keys() -> set[str]:
    """Every attribute key the code records with `span.set("key", ...)`: the searchable ones."""
    keys = set()
    for path in CRUDDUR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "set"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "span"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                keys.add(node.args[0].value)
    return keys


def observed_attributes(make_app, exporter: InMemorySpanExporter) -> dict[str, set[type]]:
    """Attribute key -> the Python types of its values, over one request to every use case."""
    client = make_app({"TELEMETRY_SPAN_EXPORTER": exporter}).test_client()
    for method, path, body in REQUESTS:
        assert getattr(client, method)(path, json=body).status_code < 500, path
    types: dict[str, set[type]] = {}
    for span in exporter.get_finished_spans():
        for key, value in span.attributes.items():
            types.setdefault(key, set()).add(type(value))
    return types


# --- both configs ------------------------------------------------------------------------------

CONFIGS = {
    "local": (LOCAL,),
    "local+honeycomb": (LOCAL, HONEYCOMB),
    "xray": (XRAY,),
    "xray+honeycomb": (XRAY, HONEYCOMB),
}


@pytest.mark.parametrize("paths", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_pipeline_names_components_that_exist(paths):
    config = collector_config(*paths)
    pipelines = config["service"]["pipelines"]
    assert pipelines
    for pipeline_id, pipeline in pipelines.items():
        assert component_type(pipeline_id) == "traces", "the backend sends traces only"
        for section in ("receivers", "processors", "exporters"):
            used = pipeline.get(section) or []
            if section != "processors":
                assert used, f"{pipeline_id} has no {section}"
            for component_id in used:
                assert component_id in (config.get(section) or {}), f"{pipeline_id}: {component_id} is not defined"
                assert component_type(component_id) in KNOWN_TYPES[section], component_id
        assert "batch" in pipeline["processors"], f"{pipeline_id} should batch before exporting"
    for section in KNOWN_TYPES:
        used = {cid for pipeline in pipelines.values() for cid in pipeline.get(section) or []}
        assert set(config.get(section) or {}) == used, f"{section} defined but never used"


@pytest.mark.parametrize("path", [LOCAL, XRAY], ids=["local", "xray"])
def test_otlp_receiver_listens_on_the_standard_ports(path):
    protocols = load(path)["receivers"]["otlp"]["protocols"]
    # In a container the receiver must listen on every interface, or the backend cannot reach it.
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


@pytest.mark.parametrize("path", [LOCAL, XRAY], ids=["local", "xray"])
def test_without_the_overlay_nothing_goes_to_honeycomb(path):
    text = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "honeycomb" not in body.lower()
    assert not exporters_of_type(load(path), OTLP_HTTP_EXPORTER)


# --- local: Jaeger -----------------------------------------------------------------------------


def test_the_local_config_exports_to_jaeger():
    config = load(LOCAL)
    [(jaeger_id, jaeger)] = exporters_of_type(config, OTLP_GRPC_EXPORTER).items()
    host, _, port = jaeger["endpoint"].partition(":")
    assert (host, port) == ("jaeger", "4317"), "Jaeger takes OTLP/gRPC on 4317"
    assert jaeger["tls"]["insecure"] is True, "Jaeger's OTLP port on the compose network has no TLS"
    assert config["service"]["pipelines"]["traces"]["exporters"] == [jaeger_id]
    assert host in load_compose()["services"]
    assert service(host)["profiles"] == ["local"]


# --- the Honeycomb leg ---------------------------------------------------------------------------


def test_the_honeycomb_leg_sends_with_the_team_header():
    overlay = load(HONEYCOMB)
    [(honeycomb_id, honeycomb)] = exporters_of_type(overlay, OTLP_HTTP_EXPORTER).items()
    assert set(overlay["exporters"]) == {honeycomb_id}
    assert env_reference(honeycomb["endpoint"]) == ("HONEYCOMB_API_ENDPOINT", HONEYCOMB_DEFAULT_ENDPOINT)
    assert env_reference(honeycomb["headers"]["x-honeycomb-team"]) == ("HONEYCOMB_API_KEY", None)


@pytest.mark.parametrize("base", [LOCAL, XRAY], ids=["local", "xray"])
def test_the_honeycomb_leg_adds_a_pipeline_and_leaves_the_others_alone(base):
    before = load(base)["service"]["pipelines"]
    after = collector_config(base, HONEYCOMB)["service"]["pipelines"]
    [added] = set(after) - set(before)
    assert {name: after[name] for name in before} == before
    assert after[added]["receivers"] == before["traces"]["receivers"], "the same spans go to Honeycomb"
    assert set(load(HONEYCOMB)) == {"exporters", "service"}, "it relies on the base for receivers and batch"


# --- xray: the awsxray exporter --------------------------------------------------------------


def test_the_xray_config_has_exactly_the_awsxray_exporter_in_the_region_of_aws_region():
    config = load(XRAY)
    assert list(config["exporters"]) == ["awsxray"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["awsxray"]
    awsxray = config["exporters"]["awsxray"]
    assert env_reference(awsxray["region"]) == ("AWS_REGION", None)
    assert not awsxray.get("index_all_attributes"), "every attribute as an annotation would hit X-Ray's limit of 50"


def test_indexed_attributes_are_the_scalar_attributes_the_services_set(make_app, span_exporter):
    """Derived from the code and a run, not copied: a new `span.set` must be added to the config.

    X-Ray annotations are strings, numbers or booleans; the exporter drops an indexed list, so a
    list (app.validation_errors) stays metadata, as in the SDK mode.
    """
    indexed = load(XRAY)["exporters"]["awsxray"]["indexed_attributes"]
    assert len(indexed) == len(set(indexed))
    searchable = span_set_keys()
    assert {"app.user_handle", "app.result_length", "app.validation_errors"} <= searchable
    observed = observed_attributes(make_app, span_exporter)
    assert searchable <= set(observed), f"the requests here never set {searchable - set(observed)}"
    scalar = {key for key in searchable if observed[key] <= {str, int, float, bool}}
    assert "app.validation_errors" not in scalar
    assert set(indexed) == scalar


# --- docker-compose.yml profiles ---------------------------------------------------------------

COLLECTORS = {"otel-collector": ("local", LOCAL), "otel-collector-xray": ("xray-otel", XRAY)}


def test_the_default_services_have_no_profile():
    """`docker compose up` with no profile starts the backend; the daemon needs credentials (`xray`)."""
    assert "profiles" not in service("backend-flask")
    profiled = {name for name, spec in load_compose()["services"].items() if "profiles" in spec}
    assert profiled == {"xray-daemon", "otel-collector", "jaeger", "otel-collector-xray"}


@pytest.mark.parametrize("name", COLLECTORS)
def test_collectors_run_the_pinned_contrib_image(name):
    image, _, tag = service(name)["image"].partition(":")
    assert image == CONTRIB_IMAGE, "awsxray is only in the contrib distribution"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a version, not {tag!r}"
    assert service(name)["image"] == service("otel-collector")["image"], "one collector version"


@pytest.mark.parametrize(("name", "profile", "config"), [(n, p, c) for n, (p, c) in COLLECTORS.items()])
def test_collectors_get_their_config_as_mounted_files(name, profile, config):
    assert service(name)["profiles"] == [profile]
    for target, source in mounts(name).items():
        assert source.is_file(), f"{name}: {source} does not exist"
        assert source.parent == OTEL
        assert target.is_absolute()
    assert all(volume.endswith(":ro") for volume in service(name)["volumes"])
    assert configs_given_to(name, {}) == [config, config], "unless asked: its own config only"
    assert configs_given_to(name, {"HONEYCOMB_API_KEY": "hcaik_x"}) == [config, config]
    assert configs_given_to(name, {"CRUDDUR_COLLECTOR_HONEYCOMB": "off"}) == [config, config]
    assert configs_given_to(name, {"CRUDDUR_COLLECTOR_HONEYCOMB": "on"}) == [config, HONEYCOMB]


@pytest.mark.parametrize("name", COLLECTORS)
def test_collectors_get_the_honeycomb_settings_from_the_host(name):
    environment = environment_of(name)
    assert host_default(environment["HONEYCOMB_API_KEY"], "HONEYCOMB_API_KEY") is None
    # Never empty: the collector's ${env:NAME:-default} falls back only when NAME is unset.
    endpoint = host_default(environment["HONEYCOMB_API_ENDPOINT"], "HONEYCOMB_API_ENDPOINT")
    assert endpoint == HONEYCOMB_DEFAULT_ENDPOINT


def test_jaeger_serves_its_ui_on_16686():
    jaeger = service("jaeger")
    image, _, tag = jaeger["image"].rpartition(":")
    assert image in JAEGER_IMAGES
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a version, not {tag!r}"
    assert "16686:16686" in jaeger["ports"]
    assert "jaeger" in service("otel-collector")["depends_on"]


def test_the_xray_collector_gets_credentials_region_and_sdk_annotation_keys():
    environment = environment_of("otel-collector-xray")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert host_default(environment[name], name) is None
    # The same region as the daemon's, so switching modes sends to the same X-Ray.
    assert host_default(environment["AWS_REGION"], "AWS_REGION") == host_default(
        environment_of("xray-daemon")["AWS_REGION"], "AWS_REGION"
    )
    assert ALLOW_DOT_OFF in service("otel-collector-xray")["command"]


def test_the_documented_backend_endpoints_reach_a_collector():
    """The commands at the top of docker-compose.yml name a collector service and its OTLP/HTTP port."""
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    endpoints = re.findall(r"OTEL_EXPORTER_OTLP_ENDPOINT=http://([a-z0-9-]+):(\d+)", text)
    assert {host for host, _ in endpoints} - {"localhost"} == set(COLLECTORS)
    for host, port in endpoints:
        if host == "localhost":  # the backend run on the host (`make run`): a published port
            assert f"{port}:{port}" in service("otel-collector")["ports"]
            host = "otel-collector"
        _, config = COLLECTORS[host]
        assert load(config)["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{port}")
    assert "CRUDDUR_XRAY_MODE=otel OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector-xray:" in text


def test_compose_resolves_the_profiles(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine")
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("HONEYCOMB_", "AWS_"))}
    arguments = ["-f", str(REPO / "docker-compose.yml"), "--env-file", str(env_file)]
    profiles = ["--profile", "xray", "--profile", "local", "--profile", "xray-otel"]
    for environ, second in (({}, "honeycomb-off.yaml"), ({"CRUDDUR_COLLECTOR_HONEYCOMB": "on"}, "honeycomb-on.yaml")):
        completed = subprocess.run(
            [*command, *arguments, *profiles, "config"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO,
            env={**clean, **environ},
        )
        assert completed.returncode == 0, completed.stderr
        services = yaml.safe_load(completed.stdout)["services"]
        assert {"backend-flask", "xray-daemon", "otel-collector", "jaeger", "otel-collector-xray"} <= set(services)
        for name in COLLECTORS:
            assert services[name]["command"][1] == f"--config=/etc/otelcol-contrib/{second}"


# --- otelcol-contrib validate, where a collector binary is at hand ------------------------------


def collector_binary() -> str | None:
    return os.environ.get("OTELCOL_CONTRIB") or shutil.which("otelcol-contrib")


def validate(binary: str, paths: Sequence[Path], extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "validate", *(f"--config={path}" for path in paths), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "AWS_REGION": "us-east-1", "HONEYCOMB_API_KEY": "hcaik_x"},
    )


@pytest.mark.parametrize("paths", CONFIGS.values(), ids=CONFIGS.keys())
def test_otelcol_contrib_validates_the_configs(paths):
    binary = collector_binary()
    if binary is None:
        pytest.skip("no otelcol-contrib here (set OTELCOL_CONTRIB to a collector binary to run this)")
    components = subprocess.run([binary, "components"], capture_output=True, text=True, timeout=60, check=False)
    needed = {"otlp", "batch", "awsxray"} | {component_type(cid) for cid in load(LOCAL)["exporters"]}
    missing = {name for name in needed if f"name: {name}\n" not in components.stdout}
    if missing:
        pytest.skip(f"{binary} lacks {sorted(missing)}: not a contrib build")
    extra = [ALLOW_DOT_OFF] if XRAY in paths else []
    completed = validate(binary, paths, extra)
    assert completed.returncode == 0, completed.stderr
