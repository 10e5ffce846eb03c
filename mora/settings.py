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


def model_budget_bytes() -> int | None:
    """``MORA_MODEL_BUDGET_GB``: memory the process-wide model cache may hold (unset: no limit)."""
    raw = os.environ.get("MORA_MODEL_BUDGET_GB", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        from mora.errors import MoraError

        raise MoraError(f"MORA_MODEL_BUDGET_GB must be a positive number of GB, got {raw!r}")
    return int(value * 1024**3)


def gpu_concurrency_limit() -> str | None:
    """``MORA_GPU_LIMIT``: the Prefect global concurrency limit every GPU task takes a slot of
    (set per worker, e.g. ``gpu-0``; unset: no guard, as in a local ``mora`` run)."""
    return os.environ.get("MORA_GPU_LIMIT", "").strip() or None
