"""docker-compose.yml, the Dockerfile, .dockerignore and .gitpod.yml, checked statically.

There is no Docker engine where the suite runs, so these tests read the files the way Docker and
Gitpod do and assert what a `docker compose up` depends on. When a compose client is installed,
`docker compose config` validates the file as well.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "backend-flask" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
GITPOD_FILE = REPO / ".gitpod.yml"

#: Every variable the backend reads; each must reach the container from the host environment.
BACKEND_ENVIRONMENT = (
    "FRONTEND_URL",
    "BACKEND_URL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_PYTHON_FLASK_EXCLUDED_URLS",
    "OTEL_PYTHON_EXCLUDED_URLS",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "HONEYCOMB_API_KEY",
    "HONEYCOMB_API_ENDPOINT",
    "HONEYCOMB_DATASET",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_METRICS_EXPORTER",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "HONEYCOMB_METRICS_DATASET",
    "CRUDDUR_METRICS_EMF",
    "CRUDDUR_XRAY_MODE",
    "AWS_ENDPOINT_URL_XRAY",
    "AWS_XRAY_DAEMON_ADDRESS",
    "AWS_XRAY_URL",
    "AWS_XRAY_SDK_ENABLED",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_TRACING_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
    "AWS_EC2_METADATA_DISABLED",
    "CLOUDWATCH_LOG_GROUP",
    "CLOUDWATCH_LOG_RETENTION_DAYS",
    "ROLLBAR_ACCESS_TOKEN",
    "ROLLBAR_ENVIRONMENT",
    "ROLLBAR_ENDPOINT",
    "ROLLBAR_CODE_VERSION",
    "DATABASE_URL",
    "CRUDDUR_DB_POOL_SIZE",
    "CRUDDUR_DB_CONNECT_TIMEOUT",
    "CRUDDUR_DB_STATEMENT_TIMEOUT",
    "CRUDDUR_USER_HANDLE",
    "CRUDDUR_ENVIRONMENT",
    "COGNITO_USER_POOL_ID",
    "COGNITO_CLIENT_ID",
    "COGNITO_JWKS_URL",
    "CRUDDUR_AUTH",
    "CRUDDUR_SAMPLING_RULE",
    "CRUDDUR_ROLLBAR_TEST_ROUTE",
    "CRUDDUR_MAX_BODY_BYTES",
    "CRUDDUR_LOG_LEVEL",
    "CRUDDUR_LOCAL_TRACES",
    "CRUDDUR_SHUTDOWN_TIMEOUT",
    "WEB_CONCURRENCY",
)

#: Variables with a fallback in docker-compose.yml: `${NAME:-default}`.
BACKEND_DEFAULTS = {
    "FRONTEND_URL": "http://localhost:3000",
    "BACKEND_URL": "http://localhost:4567",
    "OTEL_SERVICE_NAME": "backend-flask",
    "CLOUDWATCH_LOG_GROUP": "cruddur",
}

#: Variables compose sets to a fixed value rather than taking them from the host.
BACKEND_FIXED: dict[str, str] = {}
#: What the backend is given to send to the `xray` profile's daemon, as the top of the file says.
DAEMON_ADDRESS = "AWS_XRAY_DAEMON_ADDRESS=xray-daemon:2000"

XRAY_DAEMON_IMAGE = "amazon/aws-xray-daemon"
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\}$")


# --- readers -----------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def service(name: str) -> dict[str, Any]:
    return load_compose()["services"][name]


def environment_of(name: str) -> dict[str, str | None]:
    """A service's environment as compose reads it: `- NAME`/`NAME:` pass through (None)."""
    environment = service(name).get("environment") or {}
    if isinstance(environment, dict):
        return {key: None if value is None else str(value) for key, value in environment.items()}
    result: dict[str, str | None] = {}
    for item in environment:
        key, sep, value = item.partition("=")
        assert key not in result, f"{key} is set twice in {name}'s environment"
        result[key] = value if sep else None
    return result


def host_default(value: str | None, name: str) -> str | None:
    """The fallback of `${NAME:-default}`; None for a plain pass-through."""
    if value is None:
        return None
    match = INTERPOLATION.match(value)
    assert match and match["name"] == name, f"{name}={value!r} does not come from the host's {name}"
    return match["default"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def arguments_of(keyword: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == keyword]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of CMD/ENTRYPOINT/HEALTHCHECK CMD (exec form: no shell, signals reach the process)."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"{arguments!r} is not in exec form"
    return value


def key_values(arguments: str) -> dict[str, str]:
    """`ENV A=1 B=2` / `ARG A=1` as a mapping."""
    pairs = {}
    for word in shlex.split(arguments):
        key, _, value = word.partition("=")
        pairs[key] = value
    return pairs


def copies() -> list[tuple[list[str], PurePosixPath]]:
    """Each COPY from the build context: (sources, destination made absolute with the WORKDIR)."""
    result = []
    workdir = PurePosixPath("/")
    for instruction, arguments in dockerfile():
        if instruction == "WORKDIR":
            workdir = workdir / arguments
        elif instruction in ("COPY", "ADD"):
            words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
            assert not any(word.startswith("--from") for word in words), "a multi-stage COPY needs its own check"
            words = [word for word in words if not word.startswith("--")]
            *sources, destination = words
            result.append((sources, workdir / destination))
    return result


def workdir() -> PurePosixPath:
    return PurePosixPath(arguments_of("WORKDIR")[-1])


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it: `**` spans folders, `*` and `?` do not."""
    out = []
    index = 0
    pattern = pattern.strip("/")
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out.append(pattern[index : end + 1])
            index = end + 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


def dockerignored(path: str) -> bool:
    """Whether `path` (relative to the repository root) is left out of the build context."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]  # the path and its folders
    excluded = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_defines_the_backend_and_the_xray_daemon():
    assert {"backend-flask", "xray-daemon"} <= set(load_compose()["services"])


def test_backend_is_built_from_the_repository_root():
    build = service("backend-flask")["build"]
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
    assert "CRUDDUR_VERSION" in build.get("args", {}), "the image should report the code version it was built from"


def test_published_ports():
    assert "4567:4567" in service("backend-flask")["ports"]
    assert "2000:2000/udp" in service("xray-daemon")["ports"]
    assert "2000:2000/tcp" in service("xray-daemon")["ports"]


def test_telemetry_check_from_the_host_reaches_the_daemon_it_checks():
    """`telemetry check` asks the daemon's TCP proxy at AWS_XRAY_DAEMON_ADDRESS, 127.0.0.1:2000 from
    the host: the image listens on TCP 0.0.0.0:2000 (its ENTRYPOINT's -t, which the command leaves
    alone) and compose must publish that TCP port, not only the UDP one segments use."""
    daemon = service("xray-daemon")
    assert "-t" not in daemon["command"] and not any(arg.startswith("--tcp") for arg in daemon["command"])
    assert "2000:2000/tcp" in daemon["ports"]


def test_xray_daemon_image_and_command():
    daemon = service("xray-daemon")
    assert daemon["image"].split(":")[0] == XRAY_DAEMON_IMAGE
    # The image's ENTRYPOINT is /xray: the command is its arguments, and Go's flag parsing stops at
    # the first word that is not a flag, so a leading "xray" would silently drop -o and -b.
    assert daemon["command"] == ["-o", "-b", "xray-daemon:2000"]
    assert daemon["command"][0].startswith("-")


def test_the_documented_daemon_address_reaches_the_daemon_service():
    """The backend sends to whatever AWS_XRAY_DAEMON_ADDRESS says; the command at the top of the file
    points it at the daemon service, on the port the daemon binds and publishes for UDP."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert f"{DAEMON_ADDRESS} docker compose --profile xray up" in text
    host, _, port = DAEMON_ADDRESS.partition("=")[2].partition(":")
    assert host in load_compose()["services"]
    daemon = service(host)
    assert f"{port}:{port}/udp" in daemon["ports"], "segments travel over UDP to the daemon's port"
    bind = daemon["command"][daemon["command"].index("-b") + 1]
    assert bind.rpartition(":")[2] == port
    assert environment_of("backend-flask")["AWS_XRAY_DAEMON_ADDRESS"] is None, "from the host, off when unset"


def test_the_daemon_starts_only_when_asked_for():
    """It needs AWS credentials: neither `docker compose up` nor the no-account `local` profile
    starts it, and the backend does not depend on it (X-Ray stays off with one start-up line)."""
    assert service("xray-daemon")["profiles"] == ["xray"]
    assert "xray-daemon" not in (service("backend-flask").get("depends_on") or [])


def test_aws_credentials_from_a_profile_are_documented_as_they_reach_the_containers():
    """Containers get the standard credential variables; a profile of ~/.aws becomes those variables."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert 'eval "$(aws configure export-credentials --format env)"' in text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "aws configure export-credentials" in readme
    for name in ("backend-flask", "xray-daemon"):
        environment = environment_of(name)
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert environment[variable] is None, f"{variable} passes through to {name}"


#: What Compose v1 (`docker-compose` 1.x) interpolates: `$$`, `$NAME`, `${NAME}`, `${NAME:-word}`,
#: `${NAME-word}`, `${NAME:?err}`, `${NAME?err}`. v2's `${NAME:+word}` and nesting make v1 fail.
V1_REFERENCE = re.compile(r"\$(?:\$|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?-|:?\?)[^${}]*)?\})")


def test_only_interpolation_compose_v1_understands():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    without_comments = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    references = [match.start() for match in re.finditer(r"\$", without_comments)]
    position = 0
    for start in references:
        if start < position:
            continue
        match = V1_REFERENCE.match(without_comments, start)
        assert match, f"not Compose v1 interpolation: {without_comments[start : start + 40]!r}"
        position = match.end()


NO_DAEMON_COMMAND = "CRUDDUR_XRAY_MODE=otlp docker compose up"


def test_otlp_mode_runs_without_the_daemon():
    """The daemon is only in the `xray` profile, so a plain `up` leaves it out; the mode and X-Ray's
    endpoint override reach the container from the host."""
    assert "profiles" in service("xray-daemon") and set(service("backend-flask")["depends_on"]) == {"db"}
    environment = environment_of("backend-flask")
    assert environment["CRUDDUR_XRAY_MODE"] is None and environment["AWS_ENDPOINT_URL_XRAY"] is None
    assert NO_DAEMON_COMMAND in COMPOSE_FILE.read_text(encoding="utf-8")
    assert NO_DAEMON_COMMAND in (REPO / "README.md").read_text(encoding="utf-8")


def test_variable_list_has_no_duplicates():
    assert len(set(BACKEND_ENVIRONMENT)) == len(BACKEND_ENVIRONMENT)


@pytest.mark.parametrize("name", BACKEND_ENVIRONMENT)
def test_every_backend_variable_is_wired(name):
    environment = environment_of("backend-flask")
    assert name in environment, f"{name} does not reach the backend-flask container"
    value = environment[name]
    if name in BACKEND_FIXED:
        assert value == BACKEND_FIXED[name]
    else:
        host_default(value, name)  # a bare NAME, or ${NAME} with or without a default


def test_backend_environment_is_exactly_the_list():
    assert set(environment_of("backend-flask")) == set(BACKEND_ENVIRONMENT)


@pytest.mark.parametrize(("name", "default"), sorted(BACKEND_DEFAULTS.items()))
def test_backend_defaults(name, default):
    assert host_default(environment_of("backend-flask")[name], name) == default


def test_passthrough_variables_have_no_default():
    environment = environment_of("backend-flask")
    with_default = {
        name for name, value in environment.items() if name not in BACKEND_FIXED and host_default(value, name)
    }
    assert with_default == set(BACKEND_DEFAULTS) | {"DATABASE_URL"}


def test_the_backend_uses_the_db_service_once_it_is_healthy():
    """`docker compose up` runs on PostgreSQL 16: the backend starts when the database answers."""
    url = host_default(environment_of("backend-flask")["DATABASE_URL"], "DATABASE_URL")
    db = service("db")
    environment = environment_of("db")
    assert url == f"postgresql://{environment['POSTGRES_USER']}@db:5432/{environment['POSTGRES_DB']}"
    assert db["image"] == "postgres:16"
    assert service("backend-flask")["depends_on"]["db"] == {"condition": "service_healthy"}
    test = db["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "pg_isready" and f"--username={environment['POSTGRES_USER']}" in test


def test_the_database_has_no_password_because_nothing_outside_compose_reaches_it():
    assert environment_of("db")["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "ports" not in service("db"), "a trusting database must not be published on the host"
    assert "POSTGRES_PASSWORD" not in environment_of("db")


def test_database_lives_on_a_named_volume():
    """`docker compose down` then `up` keeps the data: PostgreSQL's data directory is a named volume."""
    compose = load_compose()
    mounts = dict(volume.split(":")[1::-1] for volume in service("db")["volumes"])
    assert mounts["/var/lib/postgresql/data"] in compose["volumes"], "a bind mount or anonymous volume is not kept"


def test_the_embedded_store_still_has_a_named_volume_when_chosen():
    """DATABASE_URL=sqlite:////app/backend-flask/instance/... (the compose file's own suggestion) is kept too."""
    compose = load_compose()
    mounts = {PurePosixPath(v.split(":")[1]): v.split(":")[0] for v in service("backend-flask")["volumes"]}
    assert mounts[PurePosixPath("/app/backend-flask/instance")] in compose["volumes"]
    assert "sqlite:////app/backend-flask/instance/cruddur.sqlite3" in COMPOSE_FILE.read_text(encoding="utf-8")


def test_xray_daemon_gets_credentials_and_region():
    environment = environment_of("xray-daemon")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert name in environment
        assert host_default(environment[name], name) is None
    assert host_default(environment["AWS_REGION"], "AWS_REGION") == "us-east-1"


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1 or v2), whichever this machine has.
    Where neither is, `test_only_interpolation_compose_v1_understands` is the check."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_config_validates(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine")
    # Neither the shell's settings nor a developer's .env may change what this checks.
    environment = {key: value for key, value in os.environ.items() if key not in BACKEND_ENVIRONMENT}
    environment.pop("CRUDDUR_VERSION", None)
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    completed = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr
    resolved = yaml.safe_load(completed.stdout)
    backend = resolved["services"]["backend-flask"]["environment"]
    assert backend["FRONTEND_URL"] == "http://localhost:3000"
    assert "xray-daemon" not in resolved["services"], "the daemon is in the xray profile"


# --- backend-flask/Dockerfile ------------------------------------------------------------------


def test_base_image_is_slim_python_311():
    images = arguments_of("FROM")
    assert len(images) == 1
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", images[0]), images[0]


def test_python_environment():
    environment: dict[str, str] = {}
    for arguments in arguments_of("ENV"):
        environment.update(key_values(arguments))
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["PYTHONUNBUFFERED"] == "1"


def test_code_version_is_a_build_argument():
    args: dict[str, str] = {}
    for arguments in arguments_of("ARG"):
        args.update(key_values(arguments))
    environment: dict[str, str] = {}
    for arguments in arguments_of("ENV"):
        environment.update(key_values(arguments))
    assert args["CRUDDUR_VERSION"] == "dev"
    assert environment["CRUDDUR_VERSION"] == "${CRUDDUR_VERSION}"


def test_runs_as_a_user_that_is_not_root():
    instructions = [instruction for instruction, _ in dockerfile()]
    users = arguments_of("USER")
    assert users, "the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(index for index, instruction in enumerate(instructions) if instruction == "USER")
    assert last_user < instructions.index("CMD")
    runs = " ".join(arguments_of("RUN"))
    if user.isdigit():
        assert f"--uid {user}" in runs, "the numeric USER should be the user the image creates"


def test_instance_folder_is_writable_by_the_user():
    runs = arguments_of("RUN")
    instance = str(workdir() / "instance")
    assert any(instance in run and ("chown" in run or "-o cruddur" in run) for run in runs)


def test_installs_the_locked_requirements():
    lock = next(destination for sources, destination in copies() if sources == ["backend-flask/requirements.txt"])
    installs = [run for run in arguments_of("RUN") if "pip install" in run]
    assert installs
    words = shlex.split(installs[0])
    assert "--no-cache-dir" in words
    assert workdir() / words[words.index("-r") + 1] == lock
    assert (REPO / "backend-flask" / "requirements.txt").read_text(encoding="utf-8").count("==") > 10


def test_healthcheck_asks_the_health_endpoint_with_python():
    (healthcheck,) = arguments_of("HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD ") + 4 :])
    script = " ".join(command)
    assert command[0] in ("python", "python3")
    assert "urllib" in script
    assert "http://127.0.0.1:4567/api/health" in script
    assert "curl" not in healthcheck and "wget" not in healthcheck


def test_cmd_runs_gunicorn_with_the_conf_in_the_workdir(monkeypatch):
    assert exec_form(arguments_of("CMD")[-1]) == ["gunicorn", "app:app"]
    assert workdir() == PurePosixPath("/app/backend-flask")
    monkeypatch.delenv("PORT", raising=False)
    settings: dict[str, Any] = {}
    exec((REPO / "backend-flask" / "gunicorn.conf.py").read_text(encoding="utf-8"), settings)
    assert settings["bind"] == "0.0.0.0:4567"


def test_exposes_4567():
    assert "4567" in " ".join(arguments_of("EXPOSE")).split()


def test_image_mirrors_the_repository_layout():
    """Each COPY lands at the same relative place under /app, so aws/json/xray.json is found the same way."""
    image_root = workdir().parent
    assert image_root == PurePosixPath("/app")
    copied = {source.rstrip("/") for sources, _ in copies() for source in sources}
    assert {"backend-flask", "aws/json"} <= copied
    for sources, destination in copies():
        for source in sources:
            assert destination == image_root / source.rstrip("/"), f"COPY {source} -> {destination}"


def test_copy_sources_exist_and_are_in_the_build_context():
    for sources, _ in copies():
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    needed = [
        "backend-flask/app.py",
        "backend-flask/gunicorn.conf.py",
        "backend-flask/requirements.txt",
        "backend-flask/cruddur/__init__.py",
        "aws/json/xray.json",
        "aws/json/xray-group.json",
    ]
    for path in needed:
        assert (REPO / path).exists(), path
        assert not dockerignored(path), f"{path} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "backend-flask/instance/cruddur.sqlite3",
        "backend-flask/cruddur/__pycache__/config.cpython-311.pyc",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples",
        "tests/conftest.py",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_image(path):
    assert dockerignored(path)


# --- .gitpod.yml -------------------------------------------------------------------------------


def test_gitpod_opens_4567_and_runs_make():
    gitpod = yaml.safe_load(GITPOD_FILE.read_text(encoding="utf-8"))
    ports = {entry["port"]: entry for entry in gitpod["ports"]}
    assert ports[4567]["visibility"] == "public"
    assert ports[4567]["onOpen"] == "ignore"
    tasks = gitpod["tasks"]
    assert any("make install" in task.get("init", "") for task in tasks)
    assert any("make run" in task.get("command", "") for task in tasks)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^install:", makefile, re.MULTILINE)
    assert re.search(r"^run:", makefile, re.MULTILINE)


def compose_backend_environment() -> dict[str, str]:
    """The backend's environment under `docker compose up` from a shell that sets none of it."""
    resolved = {}
    for name, value in environment_of("backend-flask").items():
        if name in BACKEND_FIXED:
            resolved[name] = value
        elif (default := host_default(value, name)) is not None:
            resolved[name] = default
    return resolved


def test_under_compose_segments_are_named_backend_flask_whatever_the_host_header(make_app, xray_daemon):
    """A Host-derived name (`AWS_XRAY_URL`) would let any client add nodes to the service map."""
    environment = compose_backend_environment()
    environment.pop("DATABASE_URL")  # the container's path; the test's own database instead
    app = make_app({**environment, "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})
    client = app.test_client()
    for host in ("localhost:4567", "made-up-node.example:4567", "backend.example.com"):
        assert client.get("/api/activities/home", headers={"Host": host}).status_code == 200
    assert {segment["name"] for segment in xray_daemon.wait_for_segments(3)} == {"backend-flask"}
