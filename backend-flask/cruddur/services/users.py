"""The users a verified token names: each gets a row the first time it is seen."""

from __future__ import annotations

from cruddur.services import Deps


def ensure_user(deps: Deps, handle: str, display_name: str) -> None:
    """Create the user unless it exists, so what they write has an author (and a display name)."""
    with deps.service("ensure-user"):
        deps.store.ensure_user(handle, display_name)
