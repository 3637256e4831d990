"""CloudWatch Logs through watchtower, made safe for the request path and truthful about what it sent.

watchtower calls AWS in its constructor and queues without limit; here the log group and its
retention are set up by the sending thread, the queue drops (and counts) lines beyond a limit,
and boto3 gives up quickly, so an unreachable or throttling AWS slows no request and grows no
memory. Lines are the app's JSON, with the trace ids in them.

watchtower's own `emit` and `_submit_batch` are replaced: its `emit` throws away every line logged
while its sender creates a stream (a guard against recursion that only its unqueued mode needs)
and cuts an oversize line by bytes into invalid JSON; its `_submit_batch` reports a lost batch
only as a `WatchtowerWarning` on stderr. What is kept of watchtower (3.4) is its batching loop
(`_dequeue_batch`), its log group call and its stream-name formatting.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from operator import itemgetter
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import watchtower

from cruddur.telemetry.counts import ToolCounts
from cruddur.telemetry.logs import JsonFormatter
from cruddur.telemetry.settings import CloudWatchSettings

log = logging.getLogger(__name__)

#: Lines waiting to be sent, per process; beyond this they are dropped and counted.
MAX_QUEUED_LINES = 10_000
#: How often queued lines are sent: CloudWatch shows them this much later at most. Every second
#: keeps each send small, so the sending thread never holds the GIL for long.
SEND_INTERVAL_SECONDS = 1
#: Room kept beyond MAX_QUEUED_LINES for metric (EMF) lines, a few a minute: a backlog of log lines
#: must not also lose the metrics that say lines are being dropped.
RESERVED_METRIC_LINES = 1_000
STREAM_NAME = "{machine_name}/backend-flask/{process_id}"
#: PutLogEvents: a batch is at most 1,048,576 bytes, counted as each event's UTF-8 message plus 26
#: bytes, and one event may be up to 1 MB; so one line may be 1,048,550 bytes of UTF-8.
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = watchtower.CloudWatchLogHandler.EXTRA_MSG_PAYLOAD_SIZE
MAX_LINE_BYTES = MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES
#: Attempts at one batch (boto3 retries each once more on throttling and 5xx answers).
SEND_ATTEMPTS = 2
#: At most one warning this often while batches are being lost.
FAILURE_WARNING_INTERVAL_SECONDS = 60.0
#: The SDK's own loggers: their lines would be sent by the thread that is logging them; and the
#: counts lines, which would count themselves.
_OWN_LOGGERS = (
    "botocore",
    "boto3",
    "urllib3",
    "watchtower",
    "cruddur.telemetry.cloudwatch",
    "cruddur.telemetry.counts",
)


def boto_config(**extra: Any) -> botocore.config.Config:
    """Fail fast: a sending thread stuck on retries is how a backlog builds up."""
    return botocore.config.Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}, **extra
    )


def missing_setting(settings: CloudWatchSettings) -> str | None:
    """What keeps CloudWatch Logs off, if anything: no region, or no credentials in boto3's chain."""
    if not settings.region:
        return "no AWS region: set AWS_REGION and credentials to send logs to CloudWatch Logs"
    try:
        credentials = boto3.Session(region_name=settings.region).get_credentials()
    except botocore.exceptions.BotoCoreError as error:
        return f"AWS credentials could not be read: {error}"
    if credentials is None:
        return "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
    return None


#: botocore's credential providers that read only the environment and local files (its METHOD names).
LOCAL_CREDENTIAL_PROVIDERS = frozenset(
    {"env", "shared-credentials-file", "config-file", "ec2-credentials-file", "boto-config"}
)


def status_line(settings: CloudWatchSettings) -> tuple[str, bool]:
    """What `telemetry status` says of CloudWatch Logs without a network call, and whether the
    app would start it (when a role would give the credentials, the line says so).

    The full credential chain may call the network (instance and container roles, SSO, assumed
    roles, a credential process), so only the providers that read the environment and the shared
    files are asked; botocore's resolver is filtered by its providers' METHOD names, here only."""
    if not settings.region:
        return settings.describe("no AWS region: set AWS_REGION and credentials to send logs to CloudWatch Logs"), False
    session = boto3.Session(region_name=settings.region)._session
    try:
        resolver = botocore.credentials.create_credential_resolver(session, region_name=settings.region)
        resolver.providers = [p for p in resolver.providers if p.METHOD in LOCAL_CREDENTIAL_PROVIDERS]
        credentials = resolver.load_credentials()
    except botocore.exceptions.BotoCoreError as error:
        return settings.describe(f"AWS credentials could not be read: {error}"), False
    if credentials is None:
        return (
            f"CloudWatch Logs: on only if a role, SSO or credential process gives AWS credentials at start, "
            f"log group {settings.log_group!r} in {settings.region} (none in the environment or ~/.aws; status "
            "makes no network call, `telemetry check` looks them up)"
        ), True
    return settings.describe(None), True


class DroppingQueue(queue.Queue):
    """A queue that refuses log lines beyond `limit` (counting them) but always takes watchtower's
    control messages, so flush and close still work when it is full."""

    def __init__(self, limit: int, counts: ToolCounts) -> None:
        super().__init__()
        self.limit = limit
        self.counts = counts

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, dict):
            if self.qsize() >= self.limit:
                self.counts.add(queued=1, dropped=1)
                return
            self.counts.add(queued=1)
        super().put(item, block, timeout)

    def put_reserved(self, item: dict[str, Any]) -> None:
        """A metric line: taken while the queue holds fewer than `limit + RESERVED_METRIC_LINES`."""
        if self.qsize() >= self.limit + RESERVED_METRIC_LINES:
            self.counts.add(queued=1, dropped=1)
            return
        self.counts.add(queued=1)
        super().put(item)


class BoundedCloudWatchHandler(watchtower.CloudWatchLogHandler):
    """`watchtower.CloudWatchLogHandler` with a bounded queue, no AWS call in the constructor, no
    line lost or cut into invalid JSON, and `counts` of what was queued, sent and dropped."""

    def __init__(self, settings: CloudWatchSettings, max_queued: int = MAX_QUEUED_LINES) -> None:
        self.settings = settings
        self.max_queued = max_queued
        self.counts = ToolCounts()
        super().__init__(
            log_group_name=settings.log_group,
            log_stream_name=STREAM_NAME,
            send_interval=SEND_INTERVAL_SECONDS,
            max_batch_size=MAX_BATCH_BYTES,
            max_message_size=MAX_BATCH_BYTES,
            create_log_group=False,
            boto3_client=self._client(),
        )
        self.addFilter(lambda record: not record.name.startswith(_OWN_LOGGERS))

    def _client(self) -> Any:
        """Events are ours and well-formed: botocore's per-event validation is skipped."""
        return boto3.client(
            "logs",
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint,
            config=boto_config(parameter_validation=False),
        )

    def _init_state(self) -> None:
        super()._init_state()
        self._group_ready = False
        self._queue_lock = threading.Lock()
        self._deadline: float | None = None
        self._stream_for_pid: tuple[int, str] = (0, "")
        self._last_failure_warning = float("-inf")

    def _at_fork_reinit(self) -> None:
        """A forked worker gets its own queue, thread and HTTP connections."""
        super()._at_fork_reinit()
        self.cwl_client = self._client()

    def _get_stream_name(self, message: logging.LogRecord) -> str:
        """One stream per host and process: formatted once per process, not per line."""
        pid = os.getpid()
        if self._stream_for_pid[0] != pid:
            self._stream_for_pid = (pid, super()._get_stream_name(message))
        return self._stream_for_pid[1]

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the line, whatever the sender is doing; a line over CloudWatch's limit is shortened
        to valid JSON (`JsonFormatter.fit`) instead of being cut by bytes."""
        try:
            line = self.format(record)
            # UTF-8 takes at most 4 bytes a character: most lines need no encoding to be measured.
            if len(line) * 4 > MAX_LINE_BYTES and len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
                formatter = self.formatter
                line = formatter.fit(record, MAX_LINE_BYTES) if isinstance(formatter, JsonFormatter) else line
            if not line.isascii():
                # A lone surrogate (JSON allows "\ud800") is not UTF-8: CloudWatch cannot take it, and
                # the sender would fail on it measuring its batch.
                line = line.encode("utf-8", "replace").decode("utf-8")
            if self.shutting_down:
                self.counts.add(queued=1, dropped=1)
                return
            self._queue_for(self._get_stream_name(record)).put(
                {"timestamp": int(record.created * 1000), "message": line}
            )
        except Exception:
            self.handleError(record)

    def emit_line(self, line: str, timestamp_ms: int) -> None:
        """Queue one line as it is (an EMF document: a JSON object of its own, not in the log envelope)
        in this process's stream, in the room kept for metric lines. Never through the logging tree,
        so stdout never sees it."""
        if self.shutting_down:
            self.counts.add(queued=1, dropped=1)
            return
        stream_name = self._get_stream_name(logging.LogRecord("cruddur.metrics", logging.INFO, "", 0, "", None, None))
        self._queue_for(stream_name).put_reserved({"timestamp": timestamp_ms, "message": line})

    def _queue_for(self, stream_name: str) -> queue.Queue:
        stream_queue = self.queues.get(stream_name)
        if stream_queue is None:
            with self._queue_lock:
                stream_queue = self.queues.get(stream_name)
                if stream_queue is None:
                    stream_queue = self._start_stream(stream_name)
        return stream_queue

    def _start_stream(self, stream_name: str) -> DroppingQueue:
        """What watchtower does on a stream's first line, with a `DroppingQueue` in place of its own."""
        stream_queue = DroppingQueue(self.max_queued, self.counts)
        thread = threading.Thread(
            target=self._dequeue_batch,
            args=(stream_queue, stream_name, self.send_interval, self.max_batch_size, self.max_batch_count),
            name=f"cloudwatch-{stream_name}",
            daemon=True,
        )
        self.threads.append(thread)
        self.queues[stream_name] = stream_queue
        thread.start()
        return stream_queue

    def _submit_batch(self, batch: list, log_stream_name: str, max_retries: int = SEND_ATTEMPTS) -> None:
        """Send one batch (the sender thread), creating the group and the stream when they are
        missing; count what CloudWatch took, rejected, or never got."""
        if not batch:
            return
        if not self._group_ready:
            self._group_ready = self._prepare_log_group()
        events = sorted(batch, key=itemgetter("timestamp"))
        error: Exception | None = None
        for _ in range(max_retries):
            try:
                response = self.cwl_client.put_log_events(
                    logGroupName=self.log_group_name, logStreamName=log_stream_name, logEvents=events
                )
            except self.cwl_client.exceptions.ResourceNotFoundException as missing:
                error = missing
                self._create_stream(log_stream_name)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as failed:
                error = failed
            else:
                rejected = rejected_count(response.get("rejectedLogEventsInfo"), len(events))
                self.counts.add(sent=len(events) - rejected, dropped=rejected)
                if rejected:
                    self._warn_lost(rejected, f"rejected by CloudWatch: {response['rejectedLogEventsInfo']}")
                return
        self.counts.add(dropped=len(events))
        self._warn_lost(len(events), f"not delivered after {max_retries} attempts: {error}")

    def _create_stream(self, stream_name: str) -> None:
        """The stream (and the group, if it went missing since) for a send that found none."""
        try:
            self._idempotent_call("create_log_stream", logGroupName=self.log_group_name, logStreamName=stream_name)
        except self.cwl_client.exceptions.ResourceNotFoundException:
            self._group_ready = self._prepare_log_group()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning("CloudWatch Logs: cannot create log stream %r: %s", stream_name, error)

    def _warn_lost(self, lines: int, why: str) -> None:
        now = time.monotonic()
        if now - self._last_failure_warning < FAILURE_WARNING_INTERVAL_SECONDS:
            return
        self._last_failure_warning = now
        log.warning("CloudWatch Logs: %d lines %s; %d dropped so far", lines, why, self.counts.dropped)

    def _prepare_log_group(self) -> bool:
        """Create the group and set its retention, from the sending thread, once it succeeds."""
        try:
            self._ensure_log_group()
            if self.settings.retention_days:
                self.cwl_client.put_retention_policy(
                    logGroupName=self.log_group_name, retentionInDays=self.settings.retention_days
                )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning("CloudWatch Logs: cannot prepare log group %r: %s", self.log_group_name, error)
            return False
        return True

    def _wait(self) -> float:
        """How long a flush or close may wait: once a shutdown deadline is set, never past it, since
        `logging.shutdown()` flushes and closes every handler again at exit, maybe while
        `flush_and_close` still waits."""
        if self._deadline is None:
            return self.FLUSH_TIMEOUT
        return max(0.0, self._deadline - time.monotonic())

    def flush(self) -> None:
        """Send what is queued now, and wait for it (up to the deadline)."""
        if self.shutting_down:
            return
        self._put_and_wait(self.FLUSH)

    def close(self) -> None:
        """Send what is queued and stop the senders; lines logged later are counted as dropped."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._put_and_wait(self.END)
        logging.Handler.close(self)

    def _put_and_wait(self, control: int) -> None:
        queues = list(self.queues.values())
        for stream_queue in queues:
            stream_queue.put(control)
        for stream_queue in queues:
            with stream_queue.all_tasks_done:
                stream_queue.all_tasks_done.wait_for(lambda q=stream_queue: q.unfinished_tasks == 0, self._wait())

    def flush_and_close(self, deadline: float) -> None:
        """Send what is queued, then stop; no part of it waits past `deadline`."""
        self._deadline = deadline
        self.flush()
        self.close()


def rejected_count(info: dict[str, int] | None, total: int) -> int:
    """How many events of a batch `rejectedLogEventsInfo` names: the oldest up to an index (too old,
    or older than the group's retention), the newest from an index (too far in the future)."""
    if not info:
        return 0
    old = max(info.get("tooOldLogEventEndIndex", -1), info.get("expiredLogEventEndIndex", -1)) + 1
    new = total - info["tooNewLogEventStartIndex"] if "tooNewLogEventStartIndex" in info else 0
    return min(total, old + new)
