"""Create the queries in honeycomb/queries.json, and a board showing them, through Honeycomb's API.

    HONEYCOMB_API_KEY=... python3 honeycomb/create_board.py [--dataset backend-flask]

The key needs the "Manage Queries and Columns" and "Manage Public Boards" permissions (a
configuration key, not the ingest key the backend sends with). For each query it creates the
query (`POST /1/queries/{dataset}`) and names it (`POST /1/query_annotations/{dataset}`), then one
flexible board with a panel per query (`POST /1/boards`), and prints the board's URL. Running it
again makes a new board. Standard library only, so it runs without the project's virtualenv.
Settings: HONEYCOMB_API_KEY, HONEYCOMB_API_ENDPOINT (default https://api.honeycomb.io), and the
dataset from --dataset, else HONEYCOMB_DATASET, else OTEL_SERVICE_NAME, else backend-flask.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

QUERIES = Path(__file__).with_name("queries.json")
DEFAULT_ENDPOINT = "https://api.honeycomb.io"
TIMEOUT_SECONDS = 20


class HoneycombError(RuntimeError):
    """The API refused a request; the message says which and why, never the key."""


class Honeycomb:
    def __init__(self, endpoint: str, api_key: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._api_key = api_key

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - the endpoint is the user's Honeycomb API
            f"{self.endpoint}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"X-Honeycomb-Team": self._api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise HoneycombError(f"POST {path} answered {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise HoneycombError(f"POST {path} failed: {error.reason}") from None


def create(honeycomb: Honeycomb, dataset: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Every query and its name, then the board; returns the board as the API describes it."""
    slug = urllib.parse.quote(dataset, safe="")
    panels = []
    for entry in spec["queries"]:
        query = honeycomb.post(f"/1/queries/{slug}", entry["query"])
        annotation = honeycomb.post(
            f"/1/query_annotations/{slug}",
            {"name": entry["name"], "description": entry["description"], "query_id": query["id"]},
        )
        panels.append(
            {
                "type": "query",
                "query_panel": {
                    "query_id": query["id"],
                    "query_annotation_id": annotation["id"],
                    "query_style": entry["style"],
                },
            }
        )
        print(f"query {entry['name']!r}: {query['id']}")
    board = {**spec["board"], "type": "flexible", "panels": panels}
    return honeycomb.post("/1/boards", board)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        default=os.environ.get("HONEYCOMB_DATASET") or os.environ.get("OTEL_SERVICE_NAME") or "backend-flask",
        help="the dataset the backend's spans are in (its service name)",
    )
    args = parser.parse_args(argv)
    api_key = os.environ.get("HONEYCOMB_API_KEY")
    if not api_key:
        print("create_board: set HONEYCOMB_API_KEY to a Honeycomb configuration key", file=sys.stderr)
        return 2
    honeycomb = Honeycomb(os.environ.get("HONEYCOMB_API_ENDPOINT") or DEFAULT_ENDPOINT, api_key)
    try:
        board = create(honeycomb, args.dataset, json.loads(QUERIES.read_text(encoding="utf-8")))
    except HoneycombError as error:
        print(f"create_board: {error}", file=sys.stderr)
        return 1
    print(f"board {board.get('id')}: {board.get('links', {}).get('board_url', '(no URL returned)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
