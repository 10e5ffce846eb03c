"""Where a training round's candidate sampling runs: in the round's own process, as
deployed subflow runs picked up by the workers of a work pool (one worker per GPU), or as tasks
on a Dask cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class SamplingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["inline", "deployment", "task-workers", "dask"] = Field(
        default="inline", description="inline: in the round's process; deployment: one run of "
        "the sampling deployment per prompt batch, on whichever worker is free; task-workers: "
        "one task per prompt for long-lived `mora worker` processes, which keep their models "
        "loaded across rounds; dask: tasks on a Dask cluster (pip install prefect-dask)")
    batch: PositiveInt | None = Field(
        default=None, le=16, description="candidates sampled per pipeline call (default: all C; "
        "1: one call per candidate); the videos are identical either way when exact")
    exact: bool = Field(
        default=True, description="batched candidates identical to one call per seed (the "
        "denoiser and VAE run sample by sample inside the call); false: the whole batch at once, "
        "faster, equal up to float rounding")
    deployment: str = Field(default="sample-candidates/sample-candidates",
                            pattern=r"^[^/\s]+/[^/\s]+$",
                            description="engine deployment: the <flow>/<deployment> to run")
    prompts_per_run: PositiveInt = Field(default=1, le=1000,
                                         description="engine deployment: prompts per subflow run")
    dask_address: str | None = Field(
        default=None, description="engine dask: the scheduler (tcp://host:8786); none: a local "
        "cluster of dask_workers processes")
    dask_workers: PositiveInt = Field(default=2, le=64)
    timeout_s: PositiveInt = Field(default=24 * 3600, description="how long the round waits for "
                                   "its sampling runs or tasks")
