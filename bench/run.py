"""`make bench`: what the four observability tools cost per request, measured on this machine.

The real service runs under gunicorn (one sync worker) in several configurations side by side,
all on the same code: every tool on and sending to local stand-ins (`bench.stand_ins`, in a
process of their own), every tool off, and each tool alone. Servers are pinned to one core; the
load generator and the stand-ins to the others.

1. All on vs all off, at 100% sampling and at the production rule: `GET /api/activities/home`
   under wrk (or the Python generator), alternating A and B for several rounds; medians of
   requests/s, p50 and p99, and the ratios.
2. Each tool's own cost: the worker's CPU time (all its threads, from /proc) over a fixed number
   of requests, plus the seconds its exporters need to send what those requests queued,
   divided by the requests; minus the same with every tool off. One more row, with every tool
   off, sends a Cognito bearer token (signed with a key made for the run, its JWKS served by the
   stand-ins) on every request: what verifying it costs.
3. The home feed on PostgreSQL, all on vs all off at 100% sampling (two more servers on one
   database created for the run on `BENCH_POSTGRES_URL`'s server, dropped at the end); skipped,
   with a line saying why, where no PostgreSQL answers.

Results are printed; with `--write` (what `make bench` passes) or an output path, they are also
written into `docs/benchmarks.md` (or that file) between two markers, so the hand-written text
around them survives a new run. `--quick` (`make bench-quick`) is a look in under a minute that
writes nothing unless asked. Settings: `BENCH_SECONDS`, `BENCH_ROUNDS`, `BENCH_WARMUP`,
`BENCH_SETTLE`, `BENCH_CONNECTIONS`, `BENCH_CPU_REQUESTS`, `BENCH_CPU_ROUNDS`, `BENCH_LOAD` (auto,
wrk or python), `BENCH_OUTPUT`, `BENCH_POSTGRES_URL`; each has a command-line flag too.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.load import LoadResult, run_python, run_wrk, wrk_path, wrk_version
from bench.procstat import CpuSample, children, cpu_sample, machine_busy_ns, pin, process_ns

REPO = Path(__file__).resolve().parents[1]
BACKEND = REPO / "backend-flask"
GUNICORN = Path(sys.executable).with_name("gunicorn")
ROUTE = "/api/activities/home"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
START_MARKER = "<!-- bench:results:start -->"
END_MARKER = "<!-- bench:results:end -->"

TOOLS = ("otel", "xray", "cloudwatch", "rollbar", "metrics")
#: `CRUDDUR_XRAY_MODE=otlp`: X-Ray without SDK or daemon. Not one of the "all on" tools (it
#: replaces the SDK); its row is measured beside CloudWatch Logs, which the region it needs turns on.
XRAY_OTLP = "xray-otlp"
TOOL_NAMES = {
    "otel": "OpenTelemetry (OTLP/HTTP, batch)",
    "xray": "AWS X-Ray (SDK, UDP)",
    "cloudwatch": "CloudWatch Logs (watchtower)",
    "rollbar": "Rollbar",
    "metrics": "Metrics (OTLP; with CloudWatch, EMF lines too)",
    XRAY_OTLP: "AWS X-Ray over OTLP (SigV4, no daemon; CloudWatch Logs subtracted)",
}
#: Not an observability tool: with every tool off, a Cognito token verified on every request.
AUTH = "auth"
AUTH_NAME = "Cognito bearer token verified on every request (RS256, keys cached)"
BENCH_POOL_ID = "us-east-1_BenchPool1"
BENCH_CLIENT_ID = "benchclient0000000000000001"
BENCH_KID = "bench-key-1"
#: The four tracing and logging tools; metrics are measured alone and on top of them.
FOUR = TOOLS[:4]
#: Metrics are exported every 5 s here, not every minute, so a CPU sample includes their exports.
BENCH_METRIC_INTERVAL_MS = "5000"
#: The configuration the X-Ray OTLP row is measured in, and the one whose cost it subtracts.
XRAY_OTLP_TOOLS = ("cloudwatch", XRAY_OTLP)
#: Sampling settings: the name in the report, and `CRUDDUR_SAMPLING_RULE` (None: keep every trace).
SAMPLINGS = {"100%": None, "production": "aws/json/xray.json"}
SAMPLING_NAMES = {"100%": "100% sampling", "production": "production rule (aws/json/xray.json)"}
#: (throughput ratio at least, p99 ratio at most), all on / all off.
TARGETS = {"100%": (0.45, 5.0), "production": (0.60, 3.0)}
#: The stores a configuration runs on: the embedded default, and PostgreSQL (a database made for the run).
SQLITE, POSTGRESQL = "sqlite", "postgresql"
#: The all-on/all-off pairs measured, as (sampling, store); the third runs only where PostgreSQL answers.
PAIRS = (("100%", SQLITE), ("production", SQLITE), ("100%", POSTGRESQL))
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Settings of the tools under test; the servers never inherit them from the caller's shell.
_ISOLATED_PREFIXES = ("OTEL_", "HONEYCOMB_", "AWS_", "ROLLBAR_", "CLOUDWATCH_", "CRUDDUR_", "COGNITO_", "DATABASE_URL")
LIBRARIES = (
    "gunicorn",
    "flask",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-flask",
    "aws-xray-sdk",
    "watchtower",
    "boto3",
    "rollbar",
    "protobuf",
)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


#: Settings of the full run (`make bench`) and of the quick look (`--quick`, under a minute).
FULL = {"seconds": 10, "rounds": 5, "warmup": 3, "settle": 6.5, "cpu_requests": 2000, "cpu_rounds": 3}
QUICK = {"seconds": 2, "rounds": 1, "warmup": 0.5, "settle": 1.5, "cpu_requests": 200, "cpu_rounds": 1}


@dataclass(frozen=True)
class Options:
    seconds: float
    rounds: int
    warmup: float
    settle: float
    connections: int
    cpu_requests: int
    cpu_rounds: int
    load: str
    #: A quick look: each tool alone is measured at 100% sampling only (fewer servers to start).
    quick: bool
    #: Where the report is written; None prints it only (a quick look must not replace the real numbers).
    output: Path | None
    postgres_url: str

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> Options:
        parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
        parser.add_argument("--quick", action="store_true", help="a quick look, under a minute: short runs, one round")
        parser.add_argument("--write", action="store_true", help=f"write the report to {DEFAULT_OUTPUT.name}")
        quick, _ = parser.parse_known_args(argv)
        preset = QUICK if quick.quick else FULL
        parser.add_argument("--seconds", type=float, default=_env_number("BENCH_SECONDS", preset["seconds"]))
        parser.add_argument("--rounds", type=int, default=int(_env_number("BENCH_ROUNDS", preset["rounds"])))
        parser.add_argument("--warmup", type=float, default=_env_number("BENCH_WARMUP", preset["warmup"]))
        parser.add_argument(
            "--settle",
            type=float,
            default=_env_number("BENCH_SETTLE", preset["settle"]),
            help="seconds the exporters get to send what a run queued (their interval is 5 s)",
        )
        parser.add_argument("--connections", type=int, default=int(_env_number("BENCH_CONNECTIONS", 4)))
        parser.add_argument(
            "--cpu-requests",
            type=int,
            default=int(_env_number("BENCH_CPU_REQUESTS", preset["cpu_requests"])),
            help="per CPU sample",
        )
        parser.add_argument(
            "--cpu-rounds", type=int, default=int(_env_number("BENCH_CPU_ROUNDS", preset["cpu_rounds"]))
        )
        parser.add_argument(
            "--load", choices=("auto", "wrk", "python"), default=os.environ.get("BENCH_LOAD", "auto") or "auto"
        )
        parser.add_argument(
            "--postgres-url",
            default=os.environ.get("BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL,
            help="a PostgreSQL server where the run may create (and drop) a database",
        )
        parser.add_argument(
            "--output", type=Path, default=Path(os.environ["BENCH_OUTPUT"]) if os.environ.get("BENCH_OUTPUT") else None
        )
        args = parser.parse_args(argv)
        load = args.load
        if load == "auto":
            load = "wrk" if wrk_path() else "python"
        if args.rounds < 1 or args.cpu_rounds < 1 or args.connections < 1 or args.cpu_requests < 1:
            parser.error("rounds, cpu-rounds, connections and cpu-requests must be at least 1")
        return cls(
            seconds=max(args.seconds, 0.5),
            rounds=args.rounds,
            warmup=max(args.warmup, 0.0),
            settle=max(args.settle, 0.0),
            connections=args.connections,
            cpu_requests=args.cpu_requests,
            cpu_rounds=args.cpu_rounds,
            load=load,
            quick=args.quick,
            output=args.output or (DEFAULT_OUTPUT if args.write else None),
            postgres_url=args.postgres_url,
        )


@dataclass(frozen=True)
class Cores:
    server: set[int]
    load: set[int]
    every: set[int]

    @classmethod
    def plan(cls) -> Cores:
        """The server alone on one core, everything else on the rest, when there are two or more."""
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(set(available), set(available), set(available))
        return cls({available[0]}, set(available[1:]), set(available))

    @property
    def pinned(self) -> bool:
        return not (self.server & self.load)

    def describe(self) -> str:
        if not self.pinned:
            return "one core: server, load generator and stand-ins share it (not pinned apart)"
        load = ",".join(map(str, sorted(self.load)))
        return f"server pinned to core {min(self.server)}; load generator and stand-ins on core {load}"


@dataclass(frozen=True)
class Variant:
    tools: frozenset[str]
    sampling: str
    store: str = SQLITE

    @property
    def key(self) -> str:
        tools = "+".join(t for t in (*TOOLS, AUTH, XRAY_OTLP) if t in self.tools) or "off"
        return f"{tools}@{pair_key(self.sampling, self.store)}"


def pair_key(sampling: str, store: str) -> str:
    """`100%`, `production`: on SQLite, as they always were; `100%-postgresql` on PostgreSQL (file names use it)."""
    return sampling if store == SQLITE else f"{sampling}-{store}"


def pair_name(key: str) -> str:
    sampling, _, store = key.partition("-")
    return SAMPLING_NAMES[sampling] + (", PostgreSQL" if store == POSTGRESQL else "")


def all_on(sampling: str, store: str = SQLITE) -> Variant:
    return Variant(frozenset(TOOLS), sampling, store)


def all_off(sampling: str, store: str = SQLITE) -> Variant:
    return Variant(frozenset(), sampling, store)


class BenchDatabase:
    """A PostgreSQL database for the run, made on a server the caller names and dropped at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"cruddur_bench_{os.getpid()}"
        with psycopg.connect(server_url, autocommit=True, connect_timeout=3) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        params = conninfo_to_dict(server_url)
        user = params.get("user", "")
        password = f":{params['password']}" if params.get("password") else ""
        address = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"
        self.url = f"postgresql://{user}{password}@{address}/{self.name}"

    def drop(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=3) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


@dataclass(frozen=True)
class BenchToken:
    """A key pair made for this run: the key set the stand-ins serve, and an access token shaped like
    Cognito's, valid for hours, that the `auth` configuration's load sends on every request."""

    jwks: str
    token: str

    @classmethod
    def create(cls) -> BenchToken:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": BENCH_KID, "alg": "RS256", "use": "sig"}
        now = int(time.time())
        claims = {
            "sub": "00000000-0000-4000-8000-00000000bench",
            "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{BENCH_POOL_ID}",
            "client_id": BENCH_CLIENT_ID,
            "token_use": "access",
            "scope": "aws.cognito.signin.user.admin",
            "username": "andrewbrown",
            "auth_time": now,
            "iat": now,
            "exp": now + 6 * 3600,
        }
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": BENCH_KID})
        return cls(json.dumps({"keys": [jwk]}), token)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def server_env(variant: Variant, stand_ins: dict[str, str], database: Path | str) -> dict[str, str]:
    """The environment of one configuration: only the settings of the tools it turns on."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_ISOLATED_PREFIXES)}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        DATABASE_URL=str(database),
        WEB_CONCURRENCY="1",
        # The development trace file is on whenever no exporter is: no row measures it.
        CRUDDUR_LOCAL_TRACES="false",
    )
    http_url = stand_ins["http"]
    if "otel" in variant.tools:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = http_url
    elif XRAY_OTLP not in variant.tools:  # X-Ray over OTLP sends the OpenTelemetry spans
        env["OTEL_SDK_DISABLED"] = "true"
    if "xray" in variant.tools:
        env["AWS_XRAY_DAEMON_ADDRESS"] = stand_ins["xray"]
    elif XRAY_OTLP in variant.tools:
        env.update(CRUDDUR_XRAY_MODE="otlp", AWS_XRAY_DAEMON_ADDRESS=stand_ins["xray"])
    else:
        env["AWS_XRAY_SDK_ENABLED"] = "false"
    if "cloudwatch" in variant.tools or XRAY_OTLP in variant.tools:
        env.update(
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="bench-fake-access-key-id",
            AWS_SECRET_ACCESS_KEY="bench-fake-secret-access-key",  # noqa: S106 - a stand-in accepts anything
            AWS_ENDPOINT_URL=http_url,
        )
    if "rollbar" in variant.tools:
        env["ROLLBAR_ACCESS_TOKEN"] = "bench-fake-rollbar-token"  # noqa: S105
        env["ROLLBAR_ENDPOINT"] = f"{http_url}/api/1/"
    if AUTH in variant.tools:
        env.update(
            COGNITO_USER_POOL_ID=BENCH_POOL_ID,
            COGNITO_CLIENT_ID=BENCH_CLIENT_ID,
            COGNITO_JWKS_URL=f"{http_url}/{BENCH_POOL_ID}/.well-known/jwks.json",
        )
    if "metrics" in variant.tools:
        env["OTEL_METRIC_EXPORT_INTERVAL"] = BENCH_METRIC_INTERVAL_MS
        if "otel" not in variant.tools:
            # Metrics without traces: OTLP metrics only (EMF lines need CloudWatch Logs on).
            del env["OTEL_SDK_DISABLED"]
            env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = f"{http_url}/v1/metrics"
    else:
        env.update(OTEL_METRICS_EXPORTER="none", CRUDDUR_METRICS_EMF="false")
    if rule := SAMPLINGS[variant.sampling]:
        env["CRUDDUR_SAMPLING_RULE"] = rule
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


class Server:
    """`gunicorn app:app` with one sync worker on a free loopback port, started from backend-flask/."""

    def __init__(self, variant: Variant, env: dict[str, str], log_path: Path, startup_cores: set[int]) -> None:
        self.variant = variant
        self.port = free_port()
        self.log_path = log_path
        self.worker: int | None = None
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                [
                    str(GUNICORN),
                    "app:app",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--worker-class",
                    "sync",
                    "--no-control-socket",
                ],
                cwd=BACKEND,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Start on every core (a quicker start-up); `pin` moves it to the server's core once up.
                preexec_fn=lambda: os.sched_setaffinity(0, startup_cores),
            )

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.variant.key}: gunicorn exited with {self.process.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get("127.0.0.1", self.port, "/api/health", timeout=1)[0] == 200:
                    workers = children(self.process.pid)
                    if len(workers) == 1:
                        self.worker = workers[0]
                        return
            time.sleep(0.1)
        raise TimeoutError(f"{self.variant.key}: gunicorn did not answer in time:\n{self.tail()}")

    def pin(self, cores: set[int]) -> None:
        pin(self.process.pid, cores)
        pin(self.worker_pid, cores)

    @property
    def worker_pid(self) -> int:
        if self.worker is None:
            raise RuntimeError(f"{self.variant.key}: not started")
        return self.worker

    def cpu(self) -> CpuSample:
        """The worker's CPU time so far; fails if gunicorn replaced the worker meanwhile."""
        if children(self.process.pid) != [self.worker_pid]:
            raise RuntimeError(f"{self.variant.key}: the gunicorn worker was restarted:\n{self.tail()}")
        return cpu_sample(self.worker_pid)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class StandIns:
    """The stand-in backends in a child process, which ends when its standard input closes."""

    def __init__(self, jwks: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.stand_ins"],
            cwd=REPO,
            env={**os.environ, "BENCH_JWKS": jwks},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError("the stand-in backends did not start")
        self.addresses: dict[str, str] = json.loads(line)
        host, port = self.addresses["http"].removeprefix("http://").rsplit(":", 1)
        self._host, self._port = host, int(port)

    def stats(self) -> dict[str, dict[str, int]]:
        return json.loads(http_get(self._host, self._port, "/stats")[2])

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Run:
    """One load run on one server: what the load generator saw, and the worker's CPU time."""

    load: LoadResult
    cpu: CpuSample

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu.total_ns / 1000 / self.load.requests if self.load.requests else float("nan")

    @property
    def background_us_per_request(self) -> float:
        return self.cpu.background_ns / 1000 / self.load.requests if self.load.requests else float("nan")


@dataclass
class Results:
    options: Options
    cores: Cores
    started: datetime
    #: All on vs all off, by `pair_key`.
    pairs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)
    #: Why a pair was not measured (no PostgreSQL), by `pair_key`.
    skipped: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, list[Run]] = field(default_factory=dict)
    stand_in_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    #: CPU that processes other than the benchmark's used while it measured, in cores (1.0 = one busy core).
    other_load: float = float("nan")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(
        self, options: Options, cores: Cores, workdir: Path, log: Callable[[str], None], token: BenchToken
    ) -> None:
        self.options = options
        self.token = token
        self.cores = cores
        self.workdir = workdir
        self.log = log
        self.servers: dict[str, Server] = {}

    def load(self, server: Server, seconds: float) -> LoadResult:
        if self.options.load == "wrk":
            return run_wrk(f"http://127.0.0.1:{server.port}{ROUTE}", self.options.connections, seconds)
        return run_python("127.0.0.1", server.port, ROUTE, self.options.connections, seconds)

    def request_headers(self, server: Server) -> dict[str, str] | None:
        """The token, for the configuration that measures verifying one; nothing for the others."""
        return self.token.headers if AUTH in server.variant.tools else None

    def start(self, variants: Sequence[Variant], stand_ins: StandIns, postgres_url: str | None = None) -> None:
        for variant in variants:
            database = postgres_url if variant.store == POSTGRESQL else self.workdir / f"{variant.key}.sqlite3"
            env = server_env(variant, stand_ins.addresses, database)
            self.servers[variant.key] = Server(variant, env, self.workdir / f"{variant.key}.log", self.cores.every)
        deadline = time.monotonic() + 120
        for server in self.servers.values():
            server.wait_ready(deadline)
            server.pin(self.cores.server)
        self.log(f"started {len(self.servers)} servers ({self.cores.describe()})")

    def warm_up(self) -> None:
        """JIT-free Python still has caches to fill: connections, imports done lazily, the first batch sent."""
        for server in self.servers.values():
            if self.options.warmup:
                run_python(
                    "127.0.0.1", server.port, ROUTE, 2, self.options.warmup, headers=self.request_headers(server)
                )
        time.sleep(self.options.settle)

    def pair(self, sampling: str, store: str) -> dict[str, list[Run]]:
        """All on (A) and all off (B) alternately, ABBA..., each A run followed by its exporters' settle time."""
        a, b = self.servers[all_on(sampling, store).key], self.servers[all_off(sampling, store).key]
        runs: dict[str, list[Run]] = {"on": [], "off": []}
        for round_index in range(self.options.rounds):
            order = [("on", a), ("off", b)] if round_index % 2 == 0 else [("off", b), ("on", a)]
            for side, server in order:
                before = server.cpu()
                result = self.load(server, self.options.seconds)
                if side == "on":
                    # What this run queued is sent now, before the other side's run starts.
                    time.sleep(self.options.settle)
                runs[side].append(Run(result, server.cpu() - before))
                self.log(
                    f"  {pair_name(pair_key(sampling, store))}, round {round_index + 1}, all {side}: "
                    f"{result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"{runs[side][-1].cpu_us_per_request:7.0f} µs CPU/req  errors {result.errors}"
                )
        return runs

    def cpu_costs(self, variants: Sequence[Variant]) -> dict[str, list[Run]]:
        """A fixed number of requests per configuration, rotating the order each round. A server's
        CPU is read again only after `settle` seconds, while the next configuration is measured."""
        runs: dict[str, list[Run]] = {variant.key: [] for variant in variants}
        pending: dict[str, tuple[CpuSample, LoadResult, float]] = {}

        def collect(key: str, wait: bool) -> None:
            before, result, finished = pending[key]
            remaining = finished + self.options.settle - time.monotonic()
            if remaining > 0:
                if not wait:
                    return
                time.sleep(remaining)
            runs[key].append(Run(result, self.servers[key].cpu() - before))
            del pending[key]

        for round_index in range(self.options.cpu_rounds):
            shift = round_index % len(variants)
            for variant in [*variants[shift:], *variants[:shift]]:
                for key in list(pending):
                    collect(key, wait=key == variant.key)
                server = self.servers[variant.key]
                before = server.cpu()
                limit = max(30.0, self.options.cpu_requests / 50)
                result = run_python(
                    "127.0.0.1",
                    server.port,
                    ROUTE,
                    2,
                    limit,
                    self.options.cpu_requests,
                    headers=self.request_headers(server),
                )
                pending[variant.key] = (before, result, time.monotonic())
            self.log(f"  CPU round {round_index + 1} of {self.options.cpu_rounds} done")
        for key in list(pending):
            collect(key, wait=True)
        return runs

    def own_ns(self, stand_ins: StandIns) -> int:
        """CPU time of every process of this benchmark: itself, its wrk runs, the servers, the stand-ins."""
        total = process_ns("self", with_children=True) + process_ns(stand_ins.process.pid)
        for server in self.servers.values():
            total += process_ns(server.process.pid) + process_ns(server.worker_pid)
        return total

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


class OtherLoad:
    """How much CPU the rest of the machine used meanwhile: a busy neighbour skews every number."""

    def __init__(self, bench: Bench, stand_ins: StandIns) -> None:
        self.bench, self.stand_ins = bench, stand_ins
        self.busy, self.wall = machine_busy_ns()
        self.own = bench.own_ns(stand_ins)

    def cores(self) -> float:
        busy, wall = machine_busy_ns()
        other = (busy - self.busy) - (self.bench.own_ns(self.stand_ins) - self.own)
        seconds_per_core = (wall - self.wall) / (os.cpu_count() or 1)
        return max(0.0, other / seconds_per_core) if seconds_per_core > 0 else float("nan")


def run(options: Options, log: Callable[[str], None] = print) -> Results:
    cores = Cores.plan()
    # This process (and so the load generator and stand-ins it starts) stays off the server's core.
    os.sched_setaffinity(0, cores.load)
    results = Results(options, cores, datetime.now(UTC))
    first = next(iter(SAMPLINGS))
    per_tool = [
        Variant(frozenset(tools), sampling)
        for sampling in SAMPLINGS
        for tools in _tool_sets()
        if not options.quick or sampling == first or tools in ((), TOOLS)
    ]
    with tempfile.TemporaryDirectory(prefix="cruddur-bench-") as workdir:
        token = BenchToken.create()
        stand_ins = StandIns(token.jwks)
        bench = Bench(options, cores, Path(workdir), log, token)
        database = _bench_database(options.postgres_url, results, log)
        pairs = [(s, store) for s, store in PAIRS if pair_key(s, store) not in results.skipped]
        on_postgres = [v(s, store) for s, store in pairs if store == POSTGRESQL for v in (all_on, all_off)]
        try:
            bench.start([*per_tool, *on_postgres], stand_ins, database.url if database else None)
            for sampling, store in pairs:
                status, headers, _ = http_get("127.0.0.1", bench.servers[all_on(sampling, store).key].port, ROUTE)
                if status != 200:
                    raise RuntimeError(f"{ROUTE} answered {status} with every tool on ({store})")
                if store == SQLITE:
                    results.headers[sampling] = headers.get("x-amzn-trace-id", "")
            log(f"warming up ({options.warmup:g} s per server), load generator: {options.load}")
            bench.warm_up()
            other_load = OtherLoad(bench, stand_ins)
            for sampling, store in pairs:
                log(f"all on vs all off, {pair_name(pair_key(sampling, store))}:")
                results.pairs[pair_key(sampling, store)] = bench.pair(sampling, store)
            log(f"CPU per request, {options.cpu_requests} requests per sample:")
            results.cpu = bench.cpu_costs(per_tool)
            results.other_load = other_load.cores()
            results.stand_in_stats = _wait_for_exports(stand_ins)
        finally:
            bench.stop()
            stand_ins.close()
            if database is not None:
                database.drop()
    _check_exports(results.stand_in_stats)
    refused = sum(run.load.errors for key, runs in results.cpu.items() if key.startswith(f"{AUTH}@") for run in runs)
    if refused:
        raise RuntimeError(f"{refused} requests with the benchmark's token were not answered 200: it was not verified")
    return results


def _bench_database(server_url: str, results: Results, log: Callable[[str], None]) -> BenchDatabase | None:
    """The run's PostgreSQL database, or None (and the PostgreSQL pair marked skipped) when none answers."""
    try:
        return BenchDatabase(server_url)
    except psycopg.Error as error:
        reason = f"no PostgreSQL at {server_url} ({str(error).strip().splitlines()[0]}); set BENCH_POSTGRES_URL"
        for sampling, store in PAIRS:
            if store == POSTGRESQL:
                results.skipped[pair_key(sampling, store)] = reason
        log(f"PostgreSQL: not measured: {reason}")
        return None


def _tool_sets() -> list[tuple[str, ...]]:
    return [(), *((tool,) for tool in TOOLS), (AUTH,), FOUR, TOOLS, XRAY_OTLP_TOOLS]


def _silent(stats: dict[str, dict[str, int]]) -> list[str]:
    return [name for name in ("otlp", "xray_otlp", "xray", "cloudwatch") if not stats.get(name, {}).get("requests")]


def _wait_for_exports(stand_ins: StandIns, timeout: float = 8.0) -> dict[str, dict[str, int]]:
    """The stand-ins' counts, once each tool has sent something (exporters send every 5 s at most)."""
    deadline = time.monotonic() + timeout
    stats = stand_ins.stats()
    while _silent(stats) and time.monotonic() < deadline:
        time.sleep(0.25)
        stats = stand_ins.stats()
    return stats


def _check_exports(stats: dict[str, dict[str, int]]) -> None:
    """Every tool that sends on a successful request must have sent something, or the numbers lie."""
    if silent := _silent(stats):
        raise RuntimeError(f"the stand-ins received nothing from: {', '.join(silent)} — a tool was not really on")


# ---------------------------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


@dataclass(frozen=True)
class Summary:
    rps: float
    p50: float
    p99: float
    cpu_us: float
    errors: int

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Summary:
        return cls(
            rps=_median([r.load.rps for r in runs]),
            p50=_median([r.load.p50_ms for r in runs]),
            p99=_median([r.load.p99_ms for r in runs]),
            cpu_us=_median([r.cpu_us_per_request for r in runs]),
            errors=sum(r.load.errors for r in runs),
        )


def machine_lines(results: Results) -> list[str]:
    options = results.options
    cpu_model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    generator = wrk_version() if options.load == "wrk" else "Python generator (bench/load.py)"
    return [
        f"- Date: {results.started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu_model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- Cores: {results.cores.describe()}",
        f"- Server: gunicorn, 1 sync worker, `GET {ROUTE}`",
        f"- Load: {generator}, {options.connections} connections, {options.seconds:g} s per run, "
        f"{options.rounds} rounds alternating all on / all off; {options.warmup:g} s warm-up per server; "
        f"{options.settle:g} s after each all-on run for its exporters",
        f"- CPU per request: {options.cpu_requests} requests per sample, median of {options.cpu_rounds} samples",
        f"- Libraries: {', '.join(versions)}",
        f"- Other processes on this machine used {_fmt(results.other_load * 100, 0)}% of one core while it measured"
        + (" (a quiet machine: under 5%)" if results.other_load < 0.05 else ": the numbers are disturbed by them"),
    ]


def pair_table(results: Results) -> list[str]:
    lines = [
        "| sampling | tools | req/s | p50 ms | p99 ms | CPU µs/req | errors |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for key, runs in results.pairs.items():
        on, off = Summary.of(runs["on"]), Summary.of(runs["off"])
        name = pair_name(key)
        for label, s in (("all on", on), ("all off", off)):
            lines.append(
                f"| {name} | {label} | {_fmt(s.rps)} | {_fmt(s.p50, 2)} | {_fmt(s.p99, 2)} | "
                f"{_fmt(s.cpu_us, 0)} | {s.errors} |"
            )
        lines.append(
            f"| {name} | **ratio on/off** | **{_fmt(_ratio(on.rps, off.rps), 2)}** | "
            f"{_fmt(_ratio(on.p50, off.p50), 2)}x | **{_fmt(_ratio(on.p99, off.p99), 2)}x** | "
            f"{_fmt(_ratio(on.cpu_us, off.cpu_us), 2)}x | |"
        )
    return lines


def target_table(results: Results) -> list[str]:
    lines = [
        "| sampling | throughput ratio | target | p99 ratio | target | CPU-bound ratio (off/on CPU) | met |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for sampling, runs in results.pairs.items():
        if sampling not in TARGETS:
            continue
        on, off = Summary.of(runs["on"]), Summary.of(runs["off"])
        throughput, p99 = _ratio(on.rps, off.rps), _ratio(on.p99, off.p99)
        least, most = TARGETS[sampling]
        met = throughput >= least and p99 <= most
        lines.append(
            f"| {SAMPLING_NAMES[sampling]} | {_fmt(throughput, 2)} | ≥ {least:.2f} | {_fmt(p99, 2)}x | ≤ {most:g}x | "
            f"{_fmt(_ratio(off.cpu_us, on.cpu_us), 2)} | {'yes' if met else 'no'} |"
        )
    return lines


def tool_table(results: Results) -> list[str]:
    header = "| tool | " + " | ".join(f"µs CPU/req, {SAMPLING_NAMES[s]}" for s in SAMPLINGS)
    header += " | of which background threads (100%) |"
    lines = [header, "|---|" + "--:|" * (len(SAMPLINGS) + 1)]

    def median_of(tools: Sequence[str], sampling: str, attribute: str) -> float:
        runs = results.cpu.get(Variant(frozenset(tools), sampling).key, [])
        return _median([getattr(run, attribute) for run in runs])

    first = next(iter(SAMPLINGS))
    baseline = {s: median_of((), s, "cpu_us_per_request") for s in SAMPLINGS}
    base_background = median_of((), first, "background_us_per_request")
    cells = " | ".join(_fmt(baseline[s], 0) for s in SAMPLINGS)
    lines.append(f"| all off (the app alone, absolute) | {cells} | {_fmt(base_background, 0)} |")
    sums = dict.fromkeys(SAMPLINGS, 0.0)
    rows = [
        *(((t,), f"+ {TOOL_NAMES[t]}") for t in TOOLS),
        ((AUTH,), f"+ {AUTH_NAME}"),
        (FOUR, "+ the four without metrics"),
        (TOOLS, "**+ all together**"),
    ]
    for tools, label in rows:
        cells = []
        for sampling in SAMPLINGS:
            cost = median_of(tools, sampling, "cpu_us_per_request") - baseline[sampling]
            if len(tools) == 1 and tools[0] in TOOLS:
                sums[sampling] += cost
            cells.append(f"+{_fmt(cost, 0)}" if cost >= 0 else _fmt(cost, 0))
        background = median_of(tools, first, "background_us_per_request") - base_background
        lines.append(f"| {label} | {' | '.join(cells)} | {_fmt(background, 0)} |")
    cells = []
    for sampling in SAMPLINGS:
        cost = median_of(XRAY_OTLP_TOOLS, sampling, "cpu_us_per_request") - median_of(
            ("cloudwatch",), sampling, "cpu_us_per_request"
        )
        cells.append(f"+{_fmt(cost, 0)}" if cost >= 0 else _fmt(cost, 0))
    background = median_of(XRAY_OTLP_TOOLS, first, "background_us_per_request") - median_of(
        ("cloudwatch",), first, "background_us_per_request"
    )
    lines.append(f"| + {TOOL_NAMES[XRAY_OTLP]} | {' | '.join(cells)} | {_fmt(background, 0)} |")
    lines.append(f"| (sum of each alone) | {' | '.join('+' + _fmt(sums[s], 0) for s in SAMPLINGS)} | |")
    cells = []
    for sampling in SAMPLINGS:
        four = median_of(FOUR, sampling, "cpu_us_per_request")
        added = median_of(TOOLS, sampling, "cpu_us_per_request") - four
        cells.append(
            f"{'+' if added >= 0 else ''}{_fmt(added, 0)} ({_fmt(_ratio(added, four) * 100, 1)}% of the four's)"
        )
    lines.append(f"| metrics on top of the other four (target: at most 5%) | {' | '.join(cells)} | |")
    return lines


def rounds_table(results: Results) -> list[str]:
    lines = ["| sampling | round | all on req/s | all off req/s | ratio | all on p99 ms | all off p99 ms | p99 ratio |"]
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|")
    for key, runs in results.pairs.items():
        for index, (on, off) in enumerate(zip(runs["on"], runs["off"], strict=True), start=1):
            lines.append(
                f"| {pair_name(key)} | {index} | {_fmt(on.load.rps)} | {_fmt(off.load.rps)} | "
                f"{_fmt(_ratio(on.load.rps, off.load.rps), 2)} | {_fmt(on.load.p99_ms, 2)} | "
                f"{_fmt(off.load.p99_ms, 2)} | {_fmt(_ratio(on.load.p99_ms, off.load.p99_ms), 2)}x |"
            )
    return lines


def stand_in_line(results: Results) -> str:
    stats = results.stand_in_stats
    parts = []
    for name, label, unit in (
        ("otlp", "OTLP", "exports"),
        ("xray_otlp", "X-Ray OTLP", "signed exports"),
        ("xray", "X-Ray daemon", "datagrams"),
        ("cloudwatch", "CloudWatch Logs", "API calls"),
        ("rollbar", "Rollbar", "items"),
    ):
        entry = stats.get(name, {"requests": 0, "bytes": 0})
        parts.append(f"{label} {entry['requests']:,} {unit} ({entry['bytes'] / 1e6:,.1f} MB)")
    return "The stand-ins received, over the whole run: " + "; ".join(parts) + "."


def render(results: Results) -> str:
    """The generated part of docs/benchmarks.md (between the markers)."""
    headers = "; ".join(f"{SAMPLING_NAMES[s]}: `X-Amzn-Trace-Id: {h}`" for s, h in results.headers.items())
    return "\n".join(
        [
            START_MARKER,
            "",
            "_Generated by `make bench`; rerun it to measure your own machine._",
            "",
            *machine_lines(results),
            "",
            "### All four tools on vs all off",
            "",
            "Medians over the rounds. Ratios are all on / all off (throughput: higher is better). "
            "The PostgreSQL rows serve the same feed from a PostgreSQL database on this machine "
            "(two queries a request, each one more client span and X-Ray subsegment when on).",
            "",
            *pair_table(results),
            *(f"\n{pair_name(key)}: not measured: {why}." for key, why in results.skipped.items()),
            "",
            "### Targets",
            "",
            *target_table(results),
            "",
            "The CPU-bound ratio is all-off CPU per request over all-on CPU per request, exporters' "
            "work after the run included: the throughput one sync worker would reach, on and off, "
            "if its core were the only limit and runs were long.",
            "",
            "### What each tool costs",
            "",
            "CPU time of the gunicorn worker (every thread) per request, for that tool alone minus "
            "every tool off; the first row is the app itself. The Cognito row sends a bearer token on every "
            "request to an app with every tool off and Cognito on: the cost of verifying it (keys cached).",
            "",
            *tool_table(results),
            "",
            "### Every round",
            "",
            *rounds_table(results),
            "",
            stand_in_line(results),
            f"A sample all-on response carried {headers}.",
            "",
            END_MARKER,
        ]
    )


DOCUMENT_TEMPLATE = """# Benchmarks: what observability costs, per request

`make bench` measures, on the machine it runs on, what the four observability tools cost the
Flask API. It starts the real service under gunicorn (one sync worker) in several
configurations side by side, all on the same code, and drives `GET /api/activities/home`:

- **all on**: OpenTelemetry, X-Ray, CloudWatch Logs and Rollbar, each sending to a local
  stand-in (`bench/stand_ins.py`) that accepts and discards, in a process of its own so that
  its CPU is not counted as the server's;
- **all off**: `OTEL_SDK_DISABLED=true`, `AWS_XRAY_SDK_ENABLED=false`, no AWS or Rollbar settings;
- **each tool alone**, for its own cost in microseconds of CPU per request;
- **a Cognito token on every request**, every tool off: what verifying it costs (its own row, in no sum).
- **all on and all off on PostgreSQL**: the same feed from a PostgreSQL database made for the run
  (`BENCH_POSTGRES_URL`), at 100% sampling.

It does so at 100% sampling and at the production rule (`CRUDDUR_SAMPLING_RULE=aws/json/xray.json`:
5 requests a second, then 10%). A look in under a minute that writes no file: `make bench-quick`; the other
settings are listed in `bench/run.py`.

{results}
"""


def write_report(results: Results, path: Path) -> None:
    """Replace the generated part of the document, keeping whatever was written around it."""
    generated = render(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    if START_MARKER in existing and END_MARKER in existing:
        head, _, rest = existing.partition(START_MARKER)
        _, _, tail = rest.partition(END_MARKER)
        text = head + generated + tail
    else:
        text = DOCUMENT_TEMPLATE.format(results=generated)
    path.write_text(text)


def console_report(results: Results) -> str:
    return "\n".join(["", *pair_table(results), "", *target_table(results), "", *tool_table(results), ""])


def main(argv: Sequence[str] | None = None) -> int:
    options = Options.parse(argv)
    results = run(options, log=lambda line: print(line, flush=True))
    print(console_report(results))
    print(stand_in_line(results))
    if options.output is None:
        print(f"not written to a file: `--write` (make bench) updates {DEFAULT_OUTPUT.relative_to(REPO)}")
    else:
        write_report(results, options.output)
        print(f"written to {options.output}")
    return 0
