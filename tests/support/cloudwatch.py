"""What a (moto-faked) CloudWatch Logs group holds, read the way that misses nothing.

GetLogEvents without `startFromHead` starts at the newest events, and one call returns one page
(at most 10,000 events or 1 MB): a reader that does either can silently see only part of a group.
"""

from __future__ import annotations

import json
from typing import Any

import boto3


def log_messages(group: str) -> list[str]:
    """Every message of every stream in `group`, oldest first within a stream.

    Streams are listed page by page; each stream is read from its head, following
    `nextForwardToken` until a page comes back empty (the API's own end-of-stream signal).
    """
    client = boto3.client("logs")
    messages = []
    for listing in client.get_paginator("describe_log_streams").paginate(logGroupName=group):
        for stream in listing["logStreams"]:
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream["logStreamName"],
                "startFromHead": True,
            }
            while True:
                page = client.get_log_events(**kwargs)
                if not page["events"]:
                    break
                messages += [event["message"] for event in page["events"]]
                kwargs["nextToken"] = page["nextForwardToken"]
    return messages


def log_records(group: str) -> list[dict]:
    """`log_messages(group)`, each decoded from JSON (the app's log lines and EMF documents alike)."""
    return [json.loads(message) for message in log_messages(group)]
