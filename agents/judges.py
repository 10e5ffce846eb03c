"""Judges (paper §4.2, A.6): rank the C candidate videos of one prompt under one criterion.

The training loop draws one of the paper's ten evaluation criteria (:data:`CRITERIA`) per
candidate set and asks two judges for a ranking; when both put the same video first it is
accepted, otherwise a human decides.  Every judge answers with a :class:`Judgement`: the raw
answer, and the parsed ranking (candidate indices, best first) or ``None`` when the answer is not
a full ranking of all C candidates (which the loop treats as a disagreement).

Backends (``configs.judges.JudgeSpec``):

* :class:`MetricJudge` — a weighted sum of weight-free video metrics; deterministic.  Two of them
  with different weightings are the default (``tiny``) judges.  Metric values are cached by
  video content in a :class:`MetricCache` that both judges of a round can share.
* :class:`OpenAIVisionJudge` — an OpenAI-compatible ``/chat/completions`` vision endpoint (vLLM
  serving Qwen2-VL or LLaVA-OneVision; vLLM needs ``--limit-mm-per-prompt`` to allow C x
  ``frames_per_video`` images).
* :class:`TransformersVisionJudge` — ``Qwen2VLForConditionalGeneration`` /
  ``LlavaOnevisionForConditionalGeneration`` from local weights, loaded once per process.

Vision judges see each candidate as ``frames_per_video`` evenly spaced frames, passed as images
(video inputs would need torchvision's video processors).  No Prefect here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from agents.cache import MODEL_CACHE, ModelCache
from configs.judges import JudgeSpec
from configs.errors import MoraError

if TYPE_CHECKING:
    from agents.loading import Runtime
    from metrics.base import MetricResult

#: The paper's evaluation criteria (A.6, Table 3 "Prompt No. | Evaluation Criteria"), verbatim.
CRITERIA: dict[int, str] = {
    1: "Evaluate the visual clarity and resolution, ranking videos based on image sharpness, smoothness of "
       "transitions, and noise levels.",
    2: "Assess object consistency and scene stability across frames, ranking videos on object motion and "
       "interactions.",
    3: "Examine the temporal coherence, identifying the best frame-to-frame continuity.",
    4: "Evaluate the narrative coherence or logical progression, ranking based on storytelling consistency.",
    5: "Assess color grading and lighting consistency, determining the best video based on smooth lighting "
       "transitions and uniform color.",
    6: "Evaluate the realism of objects, background textures, and scene complexity, ranking videos from most "
       "realistic to least.",
    7: "Analyze content relevance to the task, ranking videos based on theme alignment and task appropriateness.",
    8: "Compare the aesthetic quality, focusing on artistic composition, balance, and overall visual appeal.",
    9: "Evaluate noise and artifact levels, identifying the video with the cleanest and smoothest output.",
    10: "Examine frame rate consistency and smoothness of motion, ranking videos based on natural motion without "
        "lag or stuttering.",
}


def criterion_text(criterion_id: int) -> str:
    """The text of criterion ``criterion_id`` (1..10); MoraError for anything else."""
    if isinstance(criterion_id, bool) or not isinstance(criterion_id, (int, np.integer)) \
            or int(criterion_id) not in CRITERIA:
        raise MoraError(f"criterion must be an integer from 1 to {len(CRITERIA)}, got {criterion_id!r}")
    return CRITERIA[int(criterion_id)]


def draw_criterion(rng: Any) -> int:
    """A criterion id drawn uniformly with ``rng`` (``random.Random`` or ``numpy.random.Generator``)."""
    ids = sorted(CRITERIA)
    if hasattr(rng, "integers"):
        return ids[int(rng.integers(len(ids)))]
    return ids[rng.randrange(len(ids))]


class Judgement(BaseModel):
    """One judge's answer for one candidate set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str
    backend: str
    criterion_id: int
    criterion: str
    raw: str
    ranking: list[int] | None
    scores: list[float] | None = None

    @property
    def best(self) -> int | None:
        """The index of the candidate this judge ranked first (None without a ranking)."""
        return self.ranking[0] if self.ranking else None


# --------------------------------------------------------------------------------------------
# Parsing MLLM answers

_ITEM = r"(?:(?:video|vid|candidate|clip)[ \t]*(?:no\.?|number)?[ \t]*#?[ \t]*)?\d+"
_SEP = r"(?:[ \t]*(?:>+|,|;|->|=>|→|\band\b|\bthen\b|\bfollowed[ \t]+by\b)[ \t]*|[ \t]+)"  # within a line
_CHAIN = re.compile(rf"{_ITEM}(?:{_SEP}{_ITEM})*", re.IGNORECASE)
_KEYWORD = re.compile(r"\brank(?:ing|ed|s)?\b", re.IGNORECASE)
_LIST_LINE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:rank(?:ing)?\s*)?#?(\d+)\s*(?:[.):]|st|nd|rd|th)\s*(?:place)?\s*[:\-–]?\s*"
    r"(?:(?:video|vid|candidate|clip)\s*#?\s*)?(\d+)\b",
    re.IGNORECASE)


def _as_ranking(numbers: list[int], n: int) -> list[int] | None:
    """1-based numbers -> 0-based ranking, only when they are a permutation of 1..n."""
    if len(numbers) == n and sorted(numbers) == list(range(1, n + 1)):
        return [k - 1 for k in numbers]
    return None


def _json_numbers(value: Any) -> list[int] | None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and key.strip().lower() in {"ranking", "rank", "order", "ranked"}:
                return _json_numbers(inner)
        return None
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, bool):
            return None
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, float) and item.is_integer():
            out.append(int(item))
        elif isinstance(item, str) and len(found := re.findall(r"\d+", item)) == 1:
            out.append(int(found[0]))
        else:
            return None
    return out


def _from_json(text: str, n: int) -> list[int] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        numbers = _json_numbers(value)
        if numbers is not None and (ranking := _as_ranking(numbers, n)) is not None:
            return ranking
    return None


def _from_list_lines(text: str, n: int) -> list[int] | None:
    entries: dict[int, int] = {}
    for line in text.splitlines():
        if m := _LIST_LINE.match(line):
            position, video = int(m.group(1)), int(m.group(2))
            if position in entries:
                return None
            entries[position] = video
    if sorted(entries) != list(range(1, n + 1)):
        return None
    return _as_ranking([entries[p] for p in range(1, n + 1)], n)


def _chain_ranking(chain: str, n: int) -> list[int] | None:
    return _as_ranking([int(d) for d in re.findall(r"\d+", chain)], n)


def _chains(text: str, n: int) -> list[list[int]]:
    return [ranking for m in _CHAIN.finditer(text) if (ranking := _chain_ranking(m.group(0), n)) is not None]


def parse_ranking(text: str, n: int) -> list[int] | None:
    """Parse a judge's answer into candidate indices (0-based, best first), or None.

    Understands ``Ranking: 2 > 1 > 4 > 3``, ``[3, 1, 2, 4]``, ``{"ranking": [...]}``,
    ``Video 2, Video 4, Video 1, Video 3``, ``3 > 1 > 2 > 4`` and numbered lists
    (``1. Video 3`` …); video numbers in the text are 1-based.  The result must be a permutation
    of all ``n`` candidates: partial, duplicated, out-of-range or prose-only answers give None.
    """
    if not isinstance(text, str) or n < 1:
        return None
    clean = re.sub(r"[*_`]", "", text)
    for parse in (_from_json, _from_list_lines):
        if (ranking := parse(clean, n)) is not None:
            return ranking
    keywords = list(_KEYWORD.finditer(clean))
    for kw in reversed(keywords):  # the last "Ranking: ..." is the answer: the first chain after it
        first = _CHAIN.search(clean, kw.end())
        if first and (ranking := _chain_ranking(first.group(0), n)) is not None:
            return ranking
    found = _chains(clean, n)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------
# Candidates


def check_candidates(candidates: Any) -> list[np.ndarray]:
    """A non-empty list of ``T x H x W x 3`` uint8 videos; MoraError naming the bad one."""
    from metrics.base import check_frames

    if isinstance(candidates, np.ndarray) and candidates.ndim == 5:
        candidates = list(candidates)
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise MoraError("judges need a non-empty list of candidate videos")
    out = []
    for i, video in enumerate(candidates):
        try:
            out.append(check_frames(video, name=f"candidate {i + 1}"))
        except ValueError as exc:
            raise MoraError(str(exc)) from None
    return out


def video_digest(frames: np.ndarray) -> str:
    """A content hash of a frame array (shape, dtype and bytes)."""
    frames = np.ascontiguousarray(frames)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{frames.shape}|{frames.dtype.str}|".encode())
    h.update(memoryview(frames).cast("B"))
    return h.hexdigest()


def sample_frame_indices(num_frames: int, k: int) -> list[int]:
    """``min(k, num_frames)`` evenly spaced frame indices, first and last included."""
    k = max(1, min(k, num_frames))
    if k == 1:
        return [0]
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, k)})


def frames_as_images(frames: np.ndarray, k: int, max_side: int | None):
    """``k`` evenly spaced frames as RGB PIL images, downscaled to ``max_side`` on the longer side."""
    from PIL import Image

    images = []
    for i in sample_frame_indices(frames.shape[0], k):
        image = Image.fromarray(frames[i])
        if max_side is not None and max(image.size) > max_side:
            scale = max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        images.append(image)
    return images


def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Metric judges


def _metric_functions() -> dict[str, Callable[[np.ndarray, float, str | None], "MetricResult"]]:
    import metrics as m

    return {
        "subject_consistency": lambda f, fps, p: m.subject_consistency(f),
        "background_consistency": lambda f, fps, p: m.background_consistency(f),
        "motion_smoothness": lambda f, fps, p: m.motion_smoothness(f),
        "dynamic_degree": lambda f, fps, p: m.dynamic_degree(f, fps),
        "aesthetic_quality": lambda f, fps, p: m.aesthetic_quality(f),
        "imaging_quality": lambda f, fps, p: m.imaging_quality(f),
        "temporal_flickering": lambda f, fps, p: m.temporal_flickering(f),
        "temporal_style": lambda f, fps, p: m.temporal_style(f, p),
        "appearance_style": lambda f, fps, p: m.appearance_style(f, p),
        # the judge has no caption of a candidate: n/a until a captioner is configured
        "video_text_integration": lambda f, fps, p: m.video_text_integration(p, None),
    }


_PROMPT_METRICS = frozenset({"temporal_style", "appearance_style", "video_text_integration"})
_FPS_METRICS = frozenset({"dynamic_degree"})


class MetricCache:
    """Metric results keyed by video content: computed once, shared by every judge given this cache.

    Pass one instance to both judges of a round (``rank(..., metric_cache=cache)``): the second
    judge reuses what the first computed.  ``computed`` counts metric evaluations, ``hits`` reuses.
    """

    def __init__(self) -> None:
        self._results: dict[tuple, MetricResult] = {}
        self._lock = threading.Lock()
        self.computed = 0
        self.hits = 0

    def result(self, frames: np.ndarray, fps: float, prompt: str | None, metric: str,
               digest: str | None = None) -> "MetricResult":
        digest = digest or video_digest(frames)
        key = (digest, metric,
               float(fps) if metric in _FPS_METRICS else None,
               prompt if metric in _PROMPT_METRICS else None)
        with self._lock:
            if key in self._results:
                self.hits += 1
                return self._results[key]
        value = _metric_functions()[metric](frames, fps, prompt)
        with self._lock:
            self._results.setdefault(key, value)
            self.computed += 1
        return value

    def __len__(self) -> int:
        return len(self._results)


class Judge(Protocol):
    name: str
    spec: JudgeSpec

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str, criterion_id: int,
             metric_cache: MetricCache | None = None) -> Judgement: ...


_DECIMALS = 9


class MetricJudge:
    """Rank by a weighted sum of weight-free metrics (weights: the spec's, tilted by the criterion).

    Only metrics available for every candidate count; their weights are renormalised to sum to 1.
    Metric values and scores are rounded to 1e-9 (float noise in a metric backend -- BRISQUE
    varies by ~1e-14 between runs -- must not reorder candidates) and ties keep candidate order,
    so the ranking is deterministic.  ``raw`` is a JSON string of
    the per-candidate scores and metric values.
    """

    def __init__(self, spec: JudgeSpec):
        if spec.backend != "metrics":
            raise MoraError(f"judge {spec.name!r} is a {spec.backend} judge, not a metrics judge")
        self.spec = spec
        self.name = spec.name

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str = "", criterion_id: int = 1,
             metric_cache: MetricCache | None = None) -> Judgement:
        from metrics.base import check_fps

        criterion = criterion_text(criterion_id)
        videos = check_candidates(candidates)
        try:
            fps = check_fps(fps)
        except ValueError as exc:
            raise MoraError(str(exc)) from None
        cache = metric_cache if metric_cache is not None else MetricCache()
        weights = self.spec.weights_for(int(criterion_id))
        table = []
        for video in videos:
            digest = video_digest(video)
            table.append({m: cache.result(video, fps, prompt or None, m, digest) for m in weights})
        usable = [m for m in weights if all(row[m].value is not None for row in table)]
        skipped = {m: table[0][m].method if table[0][m].value is None else "n/a for some candidates"
                   for m in weights if m not in usable}
        total = sum(weights[m] for m in usable)
        if not usable or total <= 0:
            raw = json.dumps({"error": "no metric of this judge is available for every candidate",
                              "skipped": skipped}, sort_keys=True)
            return self._judgement(criterion_id, criterion, raw, None, None)
        norm = {m: weights[m] / total for m in usable}
        values = [{m: round(float(row[m].value), _DECIMALS) for m in usable} for row in table]
        scores = [round(sum(norm[m] * vals[m] for m in usable), _DECIMALS) for vals in values]
        ranking = sorted(range(len(videos)), key=lambda i: (-scores[i], i))
        raw = json.dumps({
            "weights": norm,
            "skipped": sorted(skipped),
            "candidates": [{"video": i + 1, "score": scores[i],
                            "metrics": values[i]} for i in range(len(videos))],
            "ranking": [i + 1 for i in ranking],
        }, sort_keys=True)
        return self._judgement(criterion_id, criterion, raw, ranking, scores)

    def _judgement(self, criterion_id, criterion, raw, ranking, scores) -> Judgement:
        return Judgement(judge=self.name, backend="metrics", criterion_id=int(criterion_id),
                         criterion=criterion, raw=raw, ranking=ranking, scores=scores)


# --------------------------------------------------------------------------------------------
# Vision (MLLM) judges

SYSTEM_PROMPT = (
    "You are an expert judge of generated videos. You are shown several candidate videos, each as a "
    "few frames in time order, and an evaluation criterion. Rank all candidate videos from best to worst "
    "under that criterion. Answer with exactly one line in the format 'Ranking: a > b > c', using each "
    "video number exactly once, best first, and nothing else."
)
# The same, where the endpoint constrains the answer to :func:`ranking_schema` (structured output).
SYSTEM_PROMPT_JSON = (
    "You are an expert judge of generated videos. You are shown several candidate videos, each as a "
    "few frames in time order, and an evaluation criterion. Rank all candidate videos from best to worst "
    "under that criterion. Answer with a JSON object {\"ranking\": [...]} listing each video number "
    "exactly once, best first."
)


def ranking_schema(n: int) -> dict:
    """The JSON schema of an answer: ``{"ranking": [n distinct video numbers 1..n, best first]}``."""
    return {"type": "object", "additionalProperties": False, "required": ["ranking"],
            "properties": {"ranking": {"type": "array", "minItems": n, "maxItems": n, "uniqueItems": True,
                                       "items": {"type": "integer", "minimum": 1, "maximum": n}}}}


def ranking_request(criterion: str, prompt: str, n: int, k: int,
                    as_json: bool = False) -> tuple[str, list[str], str]:
    """The user messages' texts: an introduction, one label per video, and the closing instruction."""
    intro = (f"Evaluation criterion: {criterion}\n"
             f"The videos were generated for the prompt: \"{' '.join(str(prompt or '').split())}\"\n"
             f"There are {n} videos, numbered 1 to {n}, each shown as {k} frames in time order. Each "
             f"video comes in its own message: its label and its frames, nothing else.")
    labels = [f"Video {i}: the frames in this message." for i in range(1, n + 1)]
    if as_json:
        closing = (f"Rank all {n} videos from best to worst under the criterion. Answer with JSON: "
                   f"{{\"ranking\": [best video number, ..., worst video number]}}")
    else:
        example = " > ".join(f"<video {c}>" for c in "abcd"[:min(n, 3)]) + (" > ..." if n > 3 else "")
        closing = (f"Rank all {n} videos from best to worst under the criterion. Answer with one line: "
                   f"Ranking: {example}")
    return intro, labels, closing


def _messages(spec: JudgeSpec, videos: list[np.ndarray], prompt: str, criterion: str,
              image_part: Callable[[Any], dict], as_json: bool = False) -> tuple[list[dict], list]:
    """System, introduction, one user message per video (label + its frames), closing.

    Each video's label and frames share a message of their own: chat templates that gather a
    message's images before its text (LLaVA-OneVision's) still keep them beside each other,
    where one message with every video would put all frames before all labels.
    """
    per_video = [frames_as_images(v, spec.frames_per_video, spec.max_image_side) for v in videos]
    k = max(len(images) for images in per_video)
    intro, labels, closing = ranking_request(criterion, prompt, len(videos), k, as_json)
    system = SYSTEM_PROMPT_JSON if as_json else SYSTEM_PROMPT
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]},
                {"role": "user", "content": [{"type": "text", "text": intro}]}]
    for label, images in zip(labels, per_video):
        messages.append({"role": "user", "content": [{"type": "text", "text": label},
                                                     *(image_part(image) for image in images)]})
    messages.append({"role": "user", "content": [{"type": "text", "text": closing}]})
    return messages, [image for images in per_video for image in images]


class OpenAIVisionJudge:
    """An OpenAI-compatible vision chat endpoint (URL and model from the spec, key from the env).

    With ``structured_output`` the ranking is asked for as JSON against :func:`ranking_schema`
    (``response_format`` of type ``json_schema``, which vLLM enforces by guided decoding); an
    endpoint that refuses the field (HTTP 400/404/422 naming it) is asked again in free text,
    parsed by :func:`parse_ranking`, and is not offered it again by this judge.
    """

    def __init__(self, spec: JudgeSpec):
        if spec.backend != "openai":
            raise MoraError(f"judge {spec.name!r} is a {spec.backend} judge, not an openai judge")
        self.spec = spec
        self.name = spec.name
        self.structured = spec.structured_output

    @property
    def url(self) -> str:
        return str(self.spec.base_url).rstrip("/") + "/chat/completions"

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str = "", criterion_id: int = 1,
             metric_cache: MetricCache | None = None) -> Judgement:
        criterion = criterion_text(criterion_id)
        videos = check_candidates(candidates)
        raw = None
        if self.structured:
            raw = self._ask(videos, prompt, criterion, as_json=True)
            if raw is None:  # the endpoint has no structured output: free text from now on
                self.structured = False
        if raw is None:
            raw = self._ask(videos, prompt, criterion, as_json=False)
        return Judgement(judge=self.name, backend="openai", criterion_id=int(criterion_id),
                         criterion=criterion, raw=raw, ranking=parse_ranking(raw, len(videos)))

    def _ask(self, videos: list[np.ndarray], prompt: str, criterion: str, as_json: bool) -> str | None:
        """The answer's text; None where ``as_json`` and the endpoint refuses ``response_format``."""
        import httpx

        messages, _ = _messages(self.spec, videos, prompt, criterion,
                                lambda im: {"type": "image_url", "image_url": {"url": png_data_url(im)}},
                                as_json)
        messages[0]["content"] = messages[0]["content"][0]["text"]  # plain string: accepted everywhere
        headers = {}
        if key := os.environ.get(self.spec.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.spec.model, "messages": messages,
                "max_tokens": self.spec.max_new_tokens, "temperature": 0.0}
        if as_json:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "ranking", "strict": True, "schema": ranking_schema(len(videos))}}
        url = self.url
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.spec.timeout_s)
            if as_json and response.status_code in (400, 404, 422) and _names_response_format(response):
                return None
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPError as exc:
            raise MoraError(f"judge endpoint {url} failed: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError):
            raise MoraError(f"judge endpoint {url} gave no chat completion") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return "" if content is None else str(content)


def _names_response_format(response: Any) -> bool:
    """Whether an error response is about the request's structured-output fields."""
    text = response.text.lower()
    return any(word in text for word in ("response_format", "json_schema", "guided", "structured"))


@lru_cache(maxsize=None)
def image_only_processor_class(arch: str) -> type:
    """``Qwen2VLProcessor`` / ``LlavaOnevisionProcessor`` without their video processor.

    transformers checks every processor argument's class, and the video processor's needs
    torchvision; judges pass frames as images, so these subclasses drop it.  They load a real
    checkpoint's processor files (tokenizer, image processor, chat template) with
    ``from_pretrained``.
    """
    if arch == "qwen2_vl":
        from transformers import Qwen2VLProcessor

        class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                kwargs.pop("video_processor", None)
                super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 chat_template=chat_template, **kwargs)
                self.video_processor = None

        return ImageOnlyQwen2VLProcessor
    if arch == "llava_onevision":
        from transformers import LlavaOnevisionProcessor

        class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
            def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                         vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                         video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
                kwargs.pop("video_processor", None)
                super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 num_image_tokens=num_image_tokens,
                                 vision_feature_select_strategy=vision_feature_select_strategy,
                                 chat_template=chat_template, image_token=image_token, video_token=video_token,
                                 vision_aspect_ratio=vision_aspect_ratio, **kwargs)
                self.video_processor = None

        return ImageOnlyLlavaOnevisionProcessor
    raise MoraError(f"unsupported judge architecture {arch!r} (known: qwen2_vl, llava_onevision)")


def _model_classes() -> dict[str, str]:
    from agents.tiny_judges import MODEL_CLASSES

    return MODEL_CLASSES


def resolve_judge_weights(model: str) -> tuple[str, str | None]:
    """``(folder or hub id, arch if known)``: ``tiny:judge-…`` builds the tiny judge on demand."""
    from agents.loading import TINY_PREFIX, resolve_weights
    from agents.tiny_judges import arch_for_tiny_name, ensure_tiny_judge

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
        key = ("judge", _model_classes()[arch], weights, self.runtime.device, self.runtime.dtype)
        return self.cache.get(key, lambda: self._load(weights, arch))

    def _load(self, weights: str, arch: str) -> tuple[Any, Any]:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        from agents.loading import check_safe_weights, pickle_allowed

        model_cls = getattr(transformers, _model_classes()[arch])
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
        messages, images = _messages(self.spec, videos, prompt, criterion, lambda im: {"type": "image"})
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
    if model_type not in _model_classes():
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


def rank_all(judges: list[Judge] | tuple[Judge, ...], candidates: list[np.ndarray], fps: float, prompt: str,
             criterion_id: int, metric_cache: MetricCache | None = None) -> list[Judgement]:
    """Every judge's judgement of one candidate set under one criterion (metric values computed once)."""
    cache = metric_cache if metric_cache is not None else MetricCache()
    return [judge.rank(candidates, fps, prompt, criterion_id, metric_cache=cache) for judge in judges]


def common_best(judgements: list[Judgement]) -> int | None:
    """The candidate every judge ranked first, or None (no judgements, an unparsed answer, or a split)."""
    bests = {j.best for j in judgements}
    return bests.pop() if len(bests) == 1 and None not in bests and judgements else None


def make_judge(spec: JudgeSpec, runtime: "Runtime | None" = None, cache: ModelCache = MODEL_CACHE) -> Judge:
    if spec.backend == "metrics":
        return MetricJudge(spec)
    if spec.backend == "openai":
        return OpenAIVisionJudge(spec)
    return TransformersVisionJudge(spec, runtime, cache)


__all__ = [
    "CRITERIA",
    "Judge",
    "Judgement",
    "MetricCache",
    "MetricJudge",
    "OpenAIVisionJudge",
    "SYSTEM_PROMPT",
    "TransformersVisionJudge",
    "check_candidates",
    "common_best",
    "criterion_text",
    "draw_criterion",
    "image_only_processor_class",
    "make_judge",
    "parse_ranking",
    "rank_all",
    "resolve_judge_weights",
    "sample_frame_indices",
    "video_digest",
]
