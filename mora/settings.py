"""Process settings read from the environment (no heavy imports here)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "./mora-store"


def mora_home() -> Path:
    """Model cache root: tiny models live under ``$MORA_HOME/tiny``."""
    return Path(os.environ.get("MORA_HOME") or Path.home() / ".cache" / "mora").expanduser()


def default_store_url() -> str:
    return os.environ.get("MORA_STORE") or DEFAULT_STORE


def default_profile() -> str:
    return os.environ.get("MORA_PROFILE") or "tiny"
