"""Unexpired activities whose message contains a term, ignoring case."""

from __future__ import annotations

from cruddur.services import Deps, ValidationFailed
from cruddur.services.validation import SEARCH_TERM_MAX_CHARS, check_text
from cruddur.store import Activity


def search_activities(deps: Deps, term: str | None) -> list[Activity]:
    with deps.service("search-activities") as (span, now):
        errors: list[str] = []
        check_text(errors, "search_term", term, SEARCH_TERM_MAX_CHARS)
        if errors:
            raise ValidationFailed(errors)
        span.detail("app.search_term_length", len(term))
        results = deps.store.search_activities(term.strip(), now)
        span.set("app.result_length", len(results))
        return results
