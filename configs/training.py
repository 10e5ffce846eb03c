"""Schema of a training config: one round of the paper's data-free loop (§3.2, A.6, A.9)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from configs.finetune import FinetuneSpec
from configs.judges import DEFAULT_METRIC_JUDGES, JudgeSpec
from configs.sampling import SamplingSpec
from configs.schema import PromptSpec

CONFIGS_DIR = Path(__file__).parent


class PromptGeneration(PromptSpec):
    """Where a round's prompts come from when not from the profile's enhancer: a language model
    (an OpenAI-compatible chat endpoint as vLLM or Ollama serve, or a local transformers LM),
    asked few-shot with examples drawn from a seed prompt set (paper §4.1: GPT-4 few-shot from
    the Sora report's prompts)."""

    seed_prompts: str = Field(description="a YAML list of prompts: a path, or relative to configs/")
    few_shot: int = Field(default=4, ge=0, le=32, description="examples shown per request")

    @field_validator("seed_prompts")
    @classmethod
    def _readable(cls, value: str) -> str:
        load_seed_prompts(value)
        return value

    def examples(self) -> list[str]:
        return load_seed_prompts(self.seed_prompts)


def load_seed_prompts(path: str) -> list[str]:
    """The seed prompt set at ``path`` (relative paths: under configs/), a non-empty YAML list
    of strings; ValueError naming the problem otherwise."""
    import yaml

    file = Path(path) if Path(path).is_absolute() else CONFIGS_DIR / path
    if not file.is_file():
        raise ValueError(f"seed prompt file {path} does not exist")
    data = yaml.safe_load(file.read_text())
    if not (isinstance(data, list) and data and all(isinstance(p, str) and p.strip() for p in data)):
        raise ValueError(f"seed prompt file {path} must be a non-empty YAML list of prompts")
    return [" ".join(p.split()) for p in data]


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    profile: str = Field(description="the agents that sample candidates and get fine-tuned")
    prompts: PositiveInt = Field(default=16, le=1000, description="P prompts per round")
    candidates: int = Field(default=4, ge=2, le=16, description="C candidate videos per prompt")
    dedup_threshold: float = Field(default=0.9, gt=0.0, le=1.0,
                                   description="MiniLM cosine above which prompts are duplicates")
    prompt_generation: PromptGeneration | None = Field(
        default=None, description="generate the prompts with this LLM from a seed prompt set "
        "(default: the profile's prompt enhancer)")
    judges: tuple[JudgeSpec, JudgeSpec] = DEFAULT_METRIC_JUDGES
    unattended: Literal["discard", "judge_a"] = Field(
        default="discard", description="when judges disagree and nobody reviews: drop the set, "
        "or take judge A's pick")
    selection: Literal["judges", "random"] = Field(
        default="judges", description="judges: the paper's selection; random: a seeded random "
        "candidate per set, the control arm of benchmarks/bench_learning.py")
    finetune: FinetuneSpec
    sampling: SamplingSpec = SamplingSpec()
    held_out_prompts: list[str] = Field(min_length=1, max_length=64,
                                        description="fixed prompts scored before/after a round")
    held_out_seed: int = Field(default=1234, ge=0)
    held_out_seeds: int = Field(default=3, ge=1, le=32, description="seeds per held-out prompt "
                                "(the score's interval comes from prompts × seeds)")

    @model_validator(mode="after")
    def _distinct_judges(self) -> "TrainingConfig":
        if self.judges[0].name == self.judges[1].name:
            raise ValueError("the two judges need different names")
        return self
