"""CloudWatch Logs through watchtower, made safe for the request path.

watchtower calls AWS in its constructor and queues without limit; here the log group and its
retention are set up by the sending thread, the queue drops (and counts) lines beyond a limit,
and boto3 gives up quickly, so an unreachable or throttling AWS slows no request and grows no
memory. Lines are the app's JSON, with the trace ids in them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import watchtower

from cruddur.telemetry.logs import preformatted_record
from cruddur.telemetry.settings import CloudWatchSettings

log = logging.getLogger(__name__)

#: Lines waiting to be sent, per process; beyond this they are dropped and counted.
MAX_QUEUED_LINES = 10_000
#: How often queued lines are sent: CloudWatch shows them this much later at most. Every second
#: keeps each send small, so the sending thread never holds the GIL for long.
SEND_INTERVAL_SECONDS = 1
STREAM_NAME = "{machine_name}/backend-flask/{process_id}"
#: The SDK's own loggers: their lines would be sent by the thread that is logging them.
_OWN_LOGGERS = ("botocore", "boto3", "urllib3", "watchtower", "cruddur.telemetry.cloudwatch")


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


class DroppingQueue(queue.Queue):
    """A queue that refuses log lines beyond `limit` (counting them) but always takes watchtower's
    control messages, so flush and close still work when it is full."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, dict) and self.qsize() >= self.limit:
            self.dropped += 1
            return
        super().put(item, block, timeout)


class BoundedCloudWatchHandler(watchtower.CloudWatchLogHandler):
    """`watchtower.CloudWatchLogHandler` with a bounded queue and no AWS call in the constructor."""

    def __init__(self, settings: CloudWatchSettings, max_queued: int = MAX_QUEUED_LINES) -> None:
        self.settings = settings
        self.max_queued = max_queued
        super().__init__(
            log_group_name=settings.log_group,
            log_stream_name=STREAM_NAME,
            send_interval=SEND_INTERVAL_SECONDS,
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

    @property
    def dropped(self) -> int:
        return sum(getattr(q, "dropped", 0) for q in self.queues.values())

    def emit(self, record: logging.LogRecord) -> None:
        stream_name = self._get_stream_name(record)
        if self.use_queues and stream_name not in self.queues:
            with self._queue_lock:
                if stream_name not in self.queues:
                    self._start_stream(stream_name)
        super().emit(record)

    def emit_line(self, line: str, timestamp_ms: int) -> None:
        """Queue one line as it is (an EMF document) in this process's stream; stdout never sees it."""
        if not self.shutting_down:
            self.handle(preformatted_record("cruddur.metrics", line, timestamp_ms / 1000))

    def _start_stream(self, stream_name: str) -> None:
        """What watchtower does on a stream's first line, with a `DroppingQueue` in place of its own."""
        stream_queue = DroppingQueue(self.max_queued)
        self.queues[stream_name] = stream_queue
        thread = threading.Thread(
            target=self._dequeue_batch,
            args=(stream_queue, stream_name, self.send_interval, self.max_batch_size, self.max_batch_count),
            name=f"cloudwatch-{stream_name}",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def _submit_batch(self, batch: list, log_stream_name: str, max_retries: int = 2) -> None:
        if batch and not self._group_ready:
            self._group_ready = self._prepare_log_group()
        super()._submit_batch(batch, log_stream_name, max_retries)

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

    def _within_deadline(self) -> None:
        """Once a shutdown deadline is set, no flush or close waits past it: `logging.shutdown()`
        flushes and closes every handler again at exit, maybe while `flush_and_close` still waits."""
        if self._deadline is not None:
            self.FLUSH_TIMEOUT = max(0.0, self._deadline - time.monotonic())

    def flush(self) -> None:
        self._within_deadline()
        super().flush()

    def close(self) -> None:
        self._within_deadline()
        super().close()

    def flush_and_close(self, deadline: float) -> None:
        """Send what is queued, then stop; no part of it waits past `deadline`."""
        self._deadline = deadline
        self.flush()
        self.close()
        if self.dropped:
            log.warning("CloudWatch Logs: %d lines were dropped while AWS could not keep up", self.dropped)
