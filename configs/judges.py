"""Pydantic schema of a judge (paper §4.2, A.6) and the two default metric judges.

A judge ranks the C candidate videos of one prompt under one of the paper's ten evaluation
criteria (``agents.judges.CRITERIA``).  Three backends:

* ``metrics`` — a weighted sum of the weight-free video metrics of :mod:`metrics` (names from
  ``metrics.METRIC_NAMES``); deterministic, no model.  The default (``tiny``) judges.
* ``openai`` — an OpenAI-compatible vision ``/chat/completions`` endpoint (e.g. vLLM serving
  Qwen2-VL or LLaVA-OneVision); URL and model from the spec, key from ``api_key_env``.
* ``transformers`` — ``Qwen2VLForConditionalGeneration`` or ``LlavaOnevisionForConditionalGeneration``
  from local weights (or ``tiny:judge-qwen2-vl`` / ``tiny:judge-llava-onevision``).
* ``world`` — for the `shapes` world (configs/world/): reads each candidate back (colour, shape,
  motion, background) and ranks by adherence to the prompt, a caption of that world's grammar,
  under the ``world_weighting`` ``look`` or ``move`` (metrics/world.py); deterministic, no model.

Metric weights and the criterion table
--------------------------------------
Metric-only rankings prefer static videos (consistency, smoothness and flicker all reward no
motion), so both default judges weigh ``dynamic_degree`` against them:

============================  ==================  ================
metric                        metrics-stability   metrics-motion
============================  ==================  ================
subject_consistency           0.20                0.15
background_consistency        0.20                0.15
motion_smoothness             0.20                0.20
temporal_flickering           0.20                —
dynamic_degree                0.20                0.30
imaging_quality               —                   0.20
============================  ==================  ================

A criterion can shift a judge's weights: :data:`CRITERION_WEIGHT_FACTORS` multiplies the weights
of the metrics it names (a metric a judge does not weigh stays at 0; the factors keep each
judge's character, they only tilt it towards what the criterion asks about).  Criteria 4
(narrative) and 7 (content relevance) name nothing a weight-free metric can see, so they leave
the weights as they are.  Weights need not sum to 1: a judge divides by the sum of the weights
of the metrics available for every candidate.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from configs.metric_names import METRIC_NAMES
from configs.schema import Device, Dtype

JudgeBackend = Literal["metrics", "openai", "transformers", "world"]
#: world backend: which attributes of a `shapes` caption count most (metrics/world.py LOOK, MOVE).
WorldWeighting = Literal["look", "move"]
JudgeArch = Literal["qwen2_vl", "llava_onevision"]

#: Metrics a judge cannot compute from a candidate alone (they need another video).
UNJUDGEABLE_METRICS: frozenset[str] = frozenset({"tcon", "tmean"})

#: Criterion id (paper A.6, 1..10) -> {metric: factor}; see the module docstring.
CRITERION_WEIGHT_FACTORS: dict[int, dict[str, float]] = {
    # visual clarity and resolution: sharpness, smooth transitions, noise
    1: {"imaging_quality": 2.0, "temporal_flickering": 1.5},
    # object consistency and scene stability
    2: {"subject_consistency": 2.0, "background_consistency": 1.5},
    # temporal coherence, frame-to-frame continuity
    3: {"motion_smoothness": 1.5, "subject_consistency": 1.5},
    # 4: narrative coherence -- nothing weight-free measures it
    # colour grading and lighting consistency (colour-layout features, brightness flicker)
    5: {"background_consistency": 1.5, "temporal_flickering": 2.0},
    # realism of objects and textures, scene complexity
    6: {"imaging_quality": 2.0},
    # 7: content relevance to the task -- needs a captioner (video_text_integration)
    # aesthetic quality (aesthetic_quality when configured; imaging quality as the closest)
    8: {"aesthetic_quality": 2.0, "imaging_quality": 1.5},
    # noise and artifact levels
    9: {"imaging_quality": 2.0, "temporal_flickering": 2.0},
    # frame-rate consistency and smoothness of motion
    10: {"motion_smoothness": 2.0, "temporal_flickering": 1.5},
}


class JudgeSpec(BaseModel):
    """One judge: its backend and how it is called."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    backend: JudgeBackend = "metrics"
    weights: dict[str, float] = Field(default_factory=dict,
                                      description="metrics backend: metric name -> weight (>= 0)")
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    frames_per_video: PositiveInt = 4
    max_image_side: PositiveInt | None = Field(
        default=448, description="frames are downscaled so their longer side is at most this (None: as is)")
    max_new_tokens: PositiveInt = 64
    timeout_s: float = Field(default=120.0, gt=0.0)
    arch: JudgeArch | None = Field(default=None, description="transformers backend: model family "
                                   "(None: read from the checkpoint's config.json)")
    device: Device | None = Field(default=None, description="transformers backend: where the model "
                                  "runs (None: the runtime it is given, else cpu)")
    dtype: Dtype | None = Field(default=None, description="transformers backend: its precision "
                                "(None: the runtime's, else float32; float16 on a CPU runs float32)")
    structured_output: bool = Field(default=True, description="openai backend: ask for the ranking "
                                    "as JSON against a schema (response_format); endpoints without it "
                                    "are asked again in free text")
    world_weighting: WorldWeighting | None = Field(default=None, description="world backend: "
                                                   "look (colour and shape first) or move (motion "
                                                   "first)")

    @field_validator("weights")
    @classmethod
    def _known_metrics(cls, weights: dict[str, float]) -> dict[str, float]:
        names = METRIC_NAMES
        for metric, weight in weights.items():
            if metric not in names:
                raise ValueError(f"unknown metric {metric!r} (known: {', '.join(names)})")
            if metric in UNJUDGEABLE_METRICS:
                raise ValueError(f"metric {metric!r} needs another video and cannot rank candidates")
            if not (weight >= 0.0 and weight < float("inf")):
                raise ValueError(f"weight of {metric!r} must be a finite number >= 0, got {weight}")
        return weights

    @model_validator(mode="after")
    def _backend_needs(self) -> "JudgeSpec":
        if self.backend == "metrics":
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError(f"metrics judge {self.name!r} needs at least one positive weight")
        elif self.weights:
            raise ValueError(f"weights are for the metrics backend, not {self.backend!r}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("judge backend 'openai' needs base_url and model")
        if self.backend == "transformers" and not self.model:
            raise ValueError("judge backend 'transformers' needs model")
        if (self.backend == "world") != (self.world_weighting is not None):
            raise ValueError("world_weighting (look or move) is for the world backend, and it "
                             "needs one")
        if self.backend != "transformers" and (self.device is not None or self.dtype is not None):
            raise ValueError(f"device and dtype are for the transformers backend, not {self.backend!r}")
        return self

    def weights_for(self, criterion_id: int) -> dict[str, float]:
        """This judge's metric weights under criterion ``criterion_id`` (positive weights only)."""
        factors = CRITERION_WEIGHT_FACTORS.get(criterion_id, {})
        out = {m: w * factors.get(m, 1.0) for m, w in self.weights.items()}
        return {m: w for m, w in out.items() if w > 0}


DEFAULT_METRIC_JUDGES: tuple[JudgeSpec, JudgeSpec] = (
    JudgeSpec(
        name="metrics-stability",
        backend="metrics",
        weights={
            "subject_consistency": 0.2,
            "background_consistency": 0.2,
            "motion_smoothness": 0.2,
            "temporal_flickering": 0.2,
            "dynamic_degree": 0.2,
        },
    ),
    JudgeSpec(
        name="metrics-motion",
        backend="metrics",
        weights={
            "dynamic_degree": 0.3,
            "imaging_quality": 0.2,
            "motion_smoothness": 0.2,
            "subject_consistency": 0.15,
            "background_consistency": 0.15,
        },
    ),
)

__all__ = [
    "CRITERION_WEIGHT_FACTORS",
    "DEFAULT_METRIC_JUDGES",
    "JudgeArch",
    "JudgeBackend",
    "JudgeSpec",
    "UNJUDGEABLE_METRICS",
]
