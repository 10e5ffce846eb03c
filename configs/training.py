"""Schema of a training config: one round of the paper's data-free loop (§3.2, A.6, A.9)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from configs.finetune import FinetuneSpec
from configs.judges import DEFAULT_METRIC_JUDGES, JudgeSpec
from configs.sampling import SamplingSpec


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    profile: str = Field(description="the agents that sample candidates and get fine-tuned")
    prompts: PositiveInt = Field(default=16, le=1000, description="P prompts per round")
    candidates: int = Field(default=4, ge=2, le=16, description="C candidate videos per prompt")
    dedup_threshold: float = Field(default=0.9, gt=0.0, le=1.0,
                                   description="MiniLM cosine above which prompts are duplicates")
    judges: tuple[JudgeSpec, JudgeSpec] = DEFAULT_METRIC_JUDGES
    unattended: Literal["discard", "judge_a"] = Field(
        default="discard", description="when judges disagree and nobody reviews: drop the set, "
        "or take judge A's pick")
    finetune: FinetuneSpec
    sampling: SamplingSpec = SamplingSpec()
    held_out_prompts: list[str] = Field(min_length=1, max_length=64,
                                        description="fixed prompts scored before/after a round")
    held_out_seed: int = Field(default=1234, ge=0)

    @model_validator(mode="after")
    def _distinct_judges(self) -> "TrainingConfig":
        if self.judges[0].name == self.judges[1].name:
            raise ValueError("the two judges need different names")
        return self
