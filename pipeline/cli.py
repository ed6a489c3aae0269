"""The ``notify`` command: Faust's CLI for the app, plus the project's commands."""

from __future__ import annotations

from pipeline import commands  # noqa: F401 - registers the project's commands
from pipeline.app import app


def main() -> None:
    """Run the CLI (``notify worker``, ``notify agents``, ``notify topics`` ...)."""
    app.main()
