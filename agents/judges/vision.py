"""Vision (MLLM) judges' request: the prompts, the answer's schema, the chat messages (each
video's label beside its frames), and the OpenAI-compatible endpoint judge."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from agents.judges.base import Judgement, check_candidates, criterion_text, frames_as_images, png_data_url
from agents.judges.parsing import parse_ranking
from configs.errors import MoraError
from configs.judges import JudgeSpec

if TYPE_CHECKING:
    from agents.judges.metric import MetricCache


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


def chat_messages(spec: JudgeSpec, videos: list[np.ndarray], prompt: str, criterion: str,
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

        messages, _ = chat_messages(self.spec, videos, prompt, criterion,
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
