"""The transformers judge: Qwen2-VL or LLaVA-OneVision from local weights (``tiny:judge-…``
builds the tiny random one on demand), loaded once per process, greedy decoding."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.cache import MODEL_CACHE, ModelCache
from agents.judges.architectures import MODEL_CLASSES, arch_for_tiny_name, image_only_processor_class
from agents.judges.base import Judgement, check_candidates, criterion_text
from agents.judges.parsing import parse_ranking
from agents.judges.vision import chat_messages
from configs.errors import MoraError
from configs.judges import JudgeSpec

if TYPE_CHECKING:
    from agents.judges.metric import MetricCache
    from agents.loading import Runtime


def resolve_judge_weights(model: str) -> tuple[str, str | None]:
    """``(folder or hub id, arch if known)``: ``tiny:judge-…`` builds the tiny judge on demand."""
    from agents.loading import TINY_PREFIX, resolve_weights
    from agents.tiny.judges import ensure_tiny_judge

    if model.startswith(TINY_PREFIX) and (arch := arch_for_tiny_name(model[len(TINY_PREFIX):])):
        return str(ensure_tiny_judge(arch)), arch
    return resolve_weights(model), None


class TransformersVisionJudge:
    """Qwen2-VL or LLaVA-OneVision from local weights, greedy decoding, loaded once per process."""

    def __init__(self, spec: JudgeSpec, runtime: "Runtime | None" = None, cache: ModelCache = MODEL_CACHE):
        if spec.backend != "transformers":
            raise MoraError(f"judge {spec.name!r} is a {spec.backend} judge, not a transformers judge")
        from agents.loading import Runtime

        self.spec = spec
        self.name = spec.name
        # The spec's device/dtype first, then the runtime given (the profile's), then CPU fp32.
        self.runtime = Runtime.of(spec.device or (runtime.device if runtime else "cpu"),
                                  spec.dtype or (runtime.dtype if runtime else "float32"))
        self.cache = cache

    def loaded(self) -> tuple[Any, Any]:
        """``(model, processor)`` from the process-wide cache (loaded on first use)."""
        weights, arch = resolve_judge_weights(str(self.spec.model))
        arch = self.spec.arch or arch or _arch_of(weights)
        key = ("judge", MODEL_CLASSES[arch], weights, self.runtime.device, self.runtime.dtype)
        return self.cache.get(key, lambda: self._load(weights, arch))

    def _load(self, weights: str, arch: str) -> tuple[Any, Any]:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        from agents.loading import check_safe_weights, pickle_allowed

        model_cls = getattr(transformers, MODEL_CLASSES[arch])
        check_safe_weights(str(self.spec.model), weights, "judge model")
        try:
            # Never unpickle weights unless the operator opted in (None: prefer safetensors).
            model = model_cls.from_pretrained(weights, dtype=self.runtime.torch_dtype,
                                              use_safetensors=None if pickle_allowed() else True)
            processor = image_only_processor_class(arch).from_pretrained(weights)
        except (OSError, ValueError) as exc:
            raise _not_available(weights, exc) from None
        model.to(self.runtime.device).eval()
        return model, processor

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str = "", criterion_id: int = 1,
             metric_cache: MetricCache | None = None) -> Judgement:
        import torch

        criterion = criterion_text(criterion_id)
        videos = check_candidates(candidates)
        model, processor = self.loaded()
        messages, images = chat_messages(self.spec, videos, prompt, criterion, lambda im: {"type": "image"})
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], images=images, return_tensors="pt")
        device, dtype = self.runtime.device, self.runtime.torch_dtype
        inputs = {k: _to(v, device, dtype) for k, v in inputs.items()}
        tokenizer = processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                                 pad_token_id=pad)
        raw = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        return Judgement(judge=self.name, backend="transformers", criterion_id=int(criterion_id),
                         criterion=criterion, raw=raw, ranking=parse_ranking(raw, len(videos)))


def _to(value: Any, device: str, dtype: Any) -> Any:
    """Tensors to the device; floating ones (pixel values) also to the model's dtype."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device, dtype=dtype) if torch.is_floating_point(value) else value.to(device)


def _arch_of(weights: str) -> str:
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(weights).model_type
    except (OSError, ValueError) as exc:
        raise _not_available(weights, exc) from None
    if model_type not in MODEL_CLASSES:
        raise MoraError(f"judge model '{weights}' is a {model_type} model; judges run qwen2_vl or llava_onevision")
    return model_type


def _not_available(weights: str, exc: Exception) -> MoraError:
    from pathlib import Path

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if Path(weights).is_dir():
        return MoraError(f"cannot load judge model from '{weights}': {first}")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    state = ("is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline
             else "could not be loaded (no local copy and the hub is unreachable?)")
    return MoraError(f"judge model '{weights}' {state}; fetch it on a connected machine with "
                     f"`huggingface-cli download {weights}` (then copy the HF cache here) or point the "
                     "judge's model at a local folder")
