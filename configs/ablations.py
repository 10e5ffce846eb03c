"""The paper's Table 5 ablations as data: each variant is a change to one training run.

A variant says how the run differs from the full loop: whether judge disagreements go to a
human reviewer (``human_review``) and how the self-modulation embedding starts (``modulation``;
None keeps the training config's). The ablation flow trains each variant from the same base
weights with the same seed, then evaluates them on the same prompts and seeds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Modulation = Literal["special_token", "random", "off"]
LossWeighting = Literal["modulation_factor", "equal"]
VARIANT_NAME_CHARS = 14  # a variant's name ends its rounds' names (flows/params.py)


class AblationVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^[a-z0-9][a-z0-9-]{{0,{VARIANT_NAME_CHARS - 1}}}$",
                      description="short id: names the variant's rounds in the store")
    label: str = Field(min_length=1, max_length=80, description="its row in the table")
    human_review: bool = Field(
        default=True, description="judge disagreements go to a reviewer (when the run's review "
        "mode is ask); false: the judges' pick stands, nobody is asked")
    modulation: Modulation | None = Field(
        default=None, description="how the modulation embedding starts: special_token (paper), "
        "random (RI), off (no self-modulation); none: the training config's")
    loss_weighting: LossWeighting | None = Field(
        default=None, description="agents trained together: each agent's loss weighted by its "
        "modulation factor (modulation_factor) or not (equal); none: the training config's")


#: Table 5's rows, in the paper's order.
PAPER_VARIANTS: tuple[AblationVariant, ...] = (
    AblationVariant(name="full", label="Mora (full loop)", modulation="special_token"),
    AblationVariant(name="no-human", label="Mora w/o Human-in-the-loop", human_review=False,
                    modulation="special_token"),
    AblationVariant(name="no-modulation", label="Mora w/o Self-modulated", modulation="off"),
    AblationVariant(name="random-init", label="Mora with RI-modulated", modulation="random"),
)

#: Beyond Table 5: the modulation factor's role in a multi-agent run (``finetune.targets``),
#: switched off -- every agent's loss counts the same, the embeddings only condition.
EXTRA_VARIANTS: tuple[AblationVariant, ...] = (
    AblationVariant(name="equal-weights", label="Mora w/o factor-weighted agent losses",
                    modulation="special_token", loss_weighting="equal"),
)
