"""The one error type for user mistakes: the CLI prints its message on one line and
exits non-zero, without a traceback. Everything else is a bug and keeps its traceback."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix. The message names the problem and the fix."""


def unknown(kind: str, name: str, known: Iterable[str]) -> UserError:
    """An 'unknown X' error that lists the known names."""
    names = ", ".join(sorted(known)) or "(none installed)"
    return UserError(f"unknown {kind} {name!r}; known {kind}s: {names}")
