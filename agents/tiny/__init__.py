"""Offline tiny models: small random diffusers pipelines (the zoo) and MLLM judges, built from
explicit configs, saved with ``save_pretrained`` under ``<MORA_HOME>/tiny/<name>`` and loaded
like real checkpoints (``tiny:<name>`` in a profile). Nothing is downloaded.

- agents/tiny/built.py: the one build-and-cache mechanism (lock, atomic rename, versioned marker).
- agents/tiny/zoo.py: the zoo's names and folders; agents/tiny/pipelines.py: its pipelines
  (one builder per model: SD3, SVD, Wan I2V/FLF2V, InstructPix2Pix).
- agents/tiny/judges.py: tiny Qwen2-VL and LLaVA-OneVision judges.
- agents/tiny/vocab.py: their tokenizers, trained with the ``tokenizers`` library.
"""

from agents.tiny.built import MARKER, SEED
from agents.tiny.judges import (
    JUDGE_ZOO_VERSION,
    build_judge_tokenizer,
    build_tiny_judge,
    ensure_tiny_judge,
    is_judge_built,
    tiny_judge_dir,
)
from agents.tiny.zoo import (
    PIPELINE_CLASSES,
    SVD_TEXT_TOWER,
    TINY_MODELS,
    ZOO_VERSION,
    build_tiny_pipeline,
    build_tiny_zoo,
    ensure_tiny_model,
    is_built,
    tiny_model_dir,
)

__all__ = [
    "JUDGE_ZOO_VERSION",
    "MARKER",
    "PIPELINE_CLASSES",
    "SEED",
    "SVD_TEXT_TOWER",
    "TINY_MODELS",
    "ZOO_VERSION",
    "build_judge_tokenizer",
    "build_tiny_judge",
    "build_tiny_pipeline",
    "build_tiny_zoo",
    "ensure_tiny_judge",
    "ensure_tiny_model",
    "is_built",
    "is_judge_built",
    "tiny_judge_dir",
    "tiny_model_dir",
]
