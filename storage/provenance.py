"""Provenance: the JSON sidecar written next to every stored artifact."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ModelRef(BaseModel):
    """A model that took part in making an artifact."""

    model_config = ConfigDict(extra="forbid")

    id: str
    revision: str | None = None
    role: str | None = None


class Provenance(BaseModel):
    """Where an artifact came from. ``sha256``, ``size`` and ``content_type`` are filled by the
    store on write (``content_type`` only when left empty)."""

    model_config = ConfigDict(extra="forbid")

    kind: str  # image | video | dataset | manifest | checkpoint | report | ...
    flow_run_id: str | None = None
    sop: str | None = None
    prompt: str | None = None
    enhanced_prompt: str | None = None
    seed: int | None = None
    profile: str | None = None
    models: list[ModelRef] = Field(default_factory=list)
    parents: list[str] = Field(default_factory=list)  # store keys of input artifacts
    created_at: datetime = Field(default_factory=_utc_now)
    params: dict[str, Any] = Field(default_factory=dict)  # JSON-able extras (frames, fps, size)
    content_type: str | None = None
    sha256: str | None = None
    size: int | None = None

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        # A naive time is taken as UTC; an aware one is converted.
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
