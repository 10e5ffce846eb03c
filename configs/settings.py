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
    value = _positive_number("MORA_MODEL_BUDGET_GB", "GB")
    if value is None:
        return None
    return int(value * 1024**3)


def gpu_concurrency_limit() -> str | None:
    """``MORA_GPU_LIMIT``: the Prefect global concurrency limit every GPU task takes a slot of
    (set per worker, e.g. ``gpu-0``; unset: no guard, as in a local ``mora`` run)."""
    return os.environ.get("MORA_GPU_LIMIT", "").strip() or None


def gpu_tasks_engine() -> str:
    """``MORA_GPU_TASKS``: where a flow's GPU tasks run: ``inline`` (default, in the flow's own
    process) or ``task-workers`` (handed to long-lived ``mora worker`` processes that keep the
    models loaded across flow runs)."""
    value = os.environ.get("MORA_GPU_TASKS", "").strip() or "inline"
    if value not in ("inline", "task-workers"):
        from configs.errors import MoraError

        raise MoraError(f"MORA_GPU_TASKS must be inline or task-workers, got {value!r}")
    return value


def cache_enabled() -> bool:
    """``MORA_CACHE``: ``on`` (default) or ``off``: no task reads or writes Prefect's result
    cache (tasks/cache.py), in the process that runs the tasks."""
    value = os.environ.get("MORA_CACHE", "").strip().lower() or "on"
    if value not in ("on", "off"):
        from configs.errors import MoraError

        raise MoraError(f"MORA_CACHE must be on or off, got {value!r}")
    return value == "on"


def gpu_task_timeout_s() -> float:
    """``MORA_GPU_TASK_TIMEOUT_S``: how long a flow waits for a ``mora worker`` to finish a GPU
    task before handing it out again (a worker that died mid-task never reports back)."""
    value = _positive_number("MORA_GPU_TASK_TIMEOUT_S", "seconds")
    return 3600.0 if value is None else value


def _positive_number(name: str, unit: str) -> float | None:
    """The environment variable ``name`` as a positive finite number (unset or empty: None)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        from configs.errors import MoraError

        raise MoraError(f"{name} must be a positive number of {unit}, got {raw!r}")
    return value
