"""What every diffusers-backed agent shares: its spec, its runtime, a lazily loaded pipeline."""

from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from agents.cache import MODEL_CACHE, ModelCache
from agents.loading import Runtime, load_pipeline, place, rebuild
from configs.schema import PipelineSpec
from configs.errors import MoraError


#: What a text-conditioned video model (Wan) is given when a run has no prompt and no other
#: text to fall back on (an edit's instruction, an enhanced prompt): neutral, content-free.
NEUTRAL_VIDEO_PROMPT = "a natural continuation of the scene with smooth, steady motion"


@dataclass(frozen=True)
class FinetunedWeights:
    """Fine-tuned weights to sample with: ``key`` names them (a store key), ``load`` fetches them."""

    key: str
    load: Callable[[], dict]


class PipelineAgent:
    """An agent backed by one diffusers pipeline, configured by a profile's :class:`PipelineSpec`.

    Pipelines differ in what they accept (SVD takes no prompt, Wan takes ``last_image``), so
    each call builds the semantic arguments once and passes those the pipeline's ``__call__``
    declares.
    """

    def __init__(self, spec: PipelineSpec, runtime: Runtime, cache: ModelCache = MODEL_CACHE,
                 weights: FinetunedWeights | None = None):
        self.spec = spec
        self.runtime = runtime
        self.cache = cache
        self.weights = weights

    def with_weights(self, weights: FinetunedWeights | None) -> "PipelineAgent":
        """The same agent sampling with fine-tuned weights (None: the base weights)."""
        return type(self)(self.spec, self.runtime, self.cache, weights)

    @property
    def pipe(self) -> Any:
        base = load_pipeline(self.spec, self.runtime, self.cache)
        if self.weights is None:
            return base
        # Its own copy of the denoiser per checkpoint; everything else is the base's (shared).
        key = ("finetuned", self.spec.pipeline, self.spec.model, self.runtime, self.weights.key)
        return self.cache.get(key, lambda: _finetuned(base, self.weights.load(), self.spec,
                                                      self.runtime))

    @cached_property
    def accepted(self) -> frozenset[str]:
        return frozenset(inspect.signature(type(self.pipe).__call__).parameters)

    @property
    def model_ref(self) -> dict[str, str | None]:
        from agents.random_weights import is_random

        revision = "random weights" if is_random(self.spec.model) else self.spec.revision
        if self.weights is not None:
            revision = f"{revision or 'base'}+finetuned:{self.weights.key}"
        return {"id": self.spec.model, "revision": revision, "role": type(self).__name__}

    def text_for(self, prompt: str | None) -> tuple[str | None, str | None]:
        """The text this pipeline is called with, and a note for the user where it is not
        ``prompt``: a model that takes no text (SVD) gets none; a text-conditioned one (Wan)
        without a prompt gets :data:`NEUTRAL_VIDEO_PROMPT` (Wan cannot run without text)."""
        given = prompt if prompt and prompt.strip() else None
        if "prompt" not in self.accepted:
            return None, (None if given is None else
                          f"{self.spec.pipeline} takes no text: the prompt is not used")
        if given is None:
            return NEUTRAL_VIDEO_PROMPT, (f"no prompt: {self.spec.pipeline} is given the default "
                                          f"text {NEUTRAL_VIDEO_PROMPT!r}")
        return given, None

    def generator(self, seed: int):
        import torch

        # CPU generators give the same noise on every device (diffusers moves it).
        return torch.Generator(device="cpu").manual_seed(seed)

    def call_args(self, **semantic: Any) -> dict[str, Any]:
        """The profile defaults and ``semantic`` args, those the pipeline accepts."""
        spec = self.spec
        args: dict[str, Any] = {
            "height": spec.height,
            "width": spec.width,
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance,
            "max_guidance_scale": spec.guidance,  # SVD's name for it
            "negative_prompt": spec.negative_prompt,
            "num_frames": spec.num_frames,
            "fps": spec.fps,
            "strength": spec.strength,
            "output_type": "pil",
        }
        args.update(semantic)
        args = {k: v for k, v in args.items() if v is not None and k in self.accepted}
        args.update(spec.call_kwargs)
        if "callback_on_step_end" in self.accepted:
            from agents.progress import stage_name, step_callback

            if callback := step_callback(stage_name(self), int(spec.steps)):
                args["callback_on_step_end"] = callback
        return args

    def run(self, seed: int, **semantic: Any) -> Any:
        """Call the pipeline with the profile defaults, ``semantic`` args it accepts and the seed."""
        args = self.call_args(**semantic)
        args["generator"] = self.generator(seed)
        return self.pipe(**args)

    def batch_plan(self, pipe: Any, count: int) -> "BatchPlan | None":
        """How ``pipe`` samples ``count`` seeds in one call, or None: one call per seed."""
        return None

    def run_batch(self, seeds: list[int], exact: bool = True, **semantic: Any) -> Any | None:
        """One pipeline call for all ``seeds`` (a generator each), each sample identical to
        :meth:`run` with its seed alone (``exact``; otherwise the denoiser and VAE run on the
        whole batch: faster, equal up to float rounding); None where this pipeline has no batch
        plan."""
        plan = self.batch_plan(self.pipe, len(seeds)) if len(seeds) > 1 else None
        if plan is None:
            return None
        args = self.call_args(**semantic, **plan.args)
        args["generator"] = [self.generator(seed) for seed in seeds]
        with per_sample(plan.pipe, plan.per_sample if exact else (), len(seeds)):
            return plan.pipe(**args)


@dataclass(frozen=True)
class BatchPlan:
    """A batched call: the pipeline to call (``pipe`` or a view of it whose input encoding and
    decoding go sample by sample), extra call arguments, and the parts (``"transformer.forward"``,
    ``"vae.decode"``) that run once per sample inside the call (see :func:`per_sample`)."""

    pipe: Any
    per_sample: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)


def batch_view(pipe: Any, view_cls: type) -> Any:
    """``pipe`` as ``view_cls`` (a subclass overriding per-sample steps) on the same components,
    scheduler included (made once per pipeline)."""
    with _VIEWS_LOCK:
        views = _VIEWS.setdefault(pipe, {})
        if view_cls not in views:
            views[view_cls] = rebuild(view_cls, pipe)
        return views[view_cls]


_VIEWS: "weakref.WeakKeyDictionary[Any, dict[type, Any]]" = weakref.WeakKeyDictionary()
_VIEWS_LOCK = threading.Lock()


@contextlib.contextmanager
def per_sample(pipe: Any, parts: tuple[str, ...], count: int) -> Iterator[None]:
    """Within the block, each of ``parts`` of ``pipe`` runs once per sample of a batch of
    ``count``: rows ``i, i+count, …`` (sample i and its classifier-free-guidance copy) together,
    exactly the rows a call for sample i alone would give it. Batched convolutions and small
    matmuls round differently from unbatched ones (~1e-6), enough to flip uint8 pixels; this
    keeps every sample's numbers identical to its own call while the rest of the pipeline
    (prompt encoding, scheduling, Python overhead) is shared by the batch."""
    patched = []
    try:
        for part in parts:
            component, _, method = part.rpartition(".")
            owner = getattr(pipe, component, None)
            if owner is None:
                continue
            had, old = method in vars(owner), getattr(owner, method)
            wrapper = _per_sample_call(old, count)
            setattr(owner, method, wrapper)
            patched.append((owner, method, had, old, wrapper))
        yield
    finally:
        for owner, method, had, old, wrapper in reversed(patched):
            if vars(owner).get(method) is not wrapper:
                continue  # re-hooked during the call (model offload): the wrapper is gone
            if had:
                setattr(owner, method, old)
            else:
                delattr(owner, method)


def _per_sample_call(fn: Callable, count: int) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        import torch

        batch = _leading_dim([*args, *kwargs.values()])
        if batch is None or batch % count or batch == count == 1:
            return fn(*args, **kwargs)
        outs = []
        for i in range(count):
            rows = torch.arange(i, batch, count)
            take = lambda v: v.index_select(0, rows.to(v.device)) if _batched(v, batch) else v  # noqa: E731
            outs.append(fn(*[take(a) for a in args], **{k: take(v) for k, v in kwargs.items()}))
        return _join(outs, batch // count)

    return call


def _leading_dim(values: list) -> int | None:
    import torch

    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return value.shape[0]
    return None


def _batched(value: Any, batch: int) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch


def _join(outs: list, copies: int) -> Any:
    """Per-sample outputs (``copies`` rows each) back into one batch in the original row order."""
    import torch

    first = outs[0]
    if isinstance(first, torch.Tensor):
        if first.ndim == 0 or first.shape[0] != copies:
            raise MoraError(f"cannot join per-sample outputs of shape {tuple(first.shape)}")
        return torch.stack(outs, dim=1).reshape(-1, *first.shape[1:])
    if isinstance(first, dict):  # diffusers/transformers ModelOutput
        return type(first)(**{k: _join([o[k] for o in outs], copies) for k in first.keys()})
    if isinstance(first, (tuple, list)):
        return type(first)(_join([o[i] for o in outs], copies) for i in range(len(first)))
    return first


def _finetuned(base: Any, weights: dict, spec: PipelineSpec, runtime: Runtime) -> Any:
    """``base`` with a private copy of its denoiser holding ``weights`` (and the modulation);
    the VAE, encoders and tokenizers stay the base's objects."""
    import copy

    from agents.finetune import apply_weights
    from agents.modulation import denoiser_of

    denoiser = denoiser_of(base)
    name = next(k for k, v in base.components.items() if v is denoiser)
    scheduler = type(base.scheduler).from_config(base.scheduler.config)
    pipe = rebuild(type(base), base, **{name: copy.deepcopy(denoiser)}, scheduler=scheduler)
    place(pipe, spec, runtime, shared=True)
    apply_weights(pipe, weights)
    return pipe


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise MoraError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def check_text(name: str, text: str, max_chars: int = 2000) -> str:
    if not isinstance(text, str) or not text.strip():
        raise MoraError(f"{name} is empty")
    if len(text) > max_chars:
        raise MoraError(f"{name} is {len(text)} characters long (at most {max_chars})")
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise MoraError(f"{name} contains control characters")
    return " ".join(text.split())
