"""What tests need to know about whichever store the app under test runs on (`pytest --store=...`)."""

from __future__ import annotations

from flask import Flask


def query_span_name(app: Flask, operation: str = "SELECT") -> str:
    """The span name of a query on the app's database: `SELECT cruddur` on the default SQLite file."""
    return f"{operation} {app.extensions['cruddur'].deps.store.database.namespace}"
