"""Logging that every suite configures the same way (stderr, one line per event)."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

from atelier.core.progress import stderr_console

_configured = False


def setup_logging(level: str = "INFO") -> None:
    global _configured
    if _configured:
        logging.getLogger().setLevel(level)
        return
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=stderr_console, show_path=False, rich_tracebacks=False)],
    )
    _configured = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
