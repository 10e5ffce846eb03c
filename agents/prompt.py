"""Prompt enhancer agent (paper A.5): refine a user prompt into one a video model follows well.

Backends: a deterministic template (no model; the tiny profile), any OpenAI-compatible chat
endpoint (vLLM, Ollama, OpenAI), or a local transformers causal LM.
"""

from __future__ import annotations

import os
from typing import Protocol

from agents.base import check_text
from configs.schema import PromptSpec
from mora.errors import MoraError

SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-video model. Keep the user's subject and action; add the "
    "setting, lighting, camera movement and visual style in one vivid paragraph of at most 80 "
    "words. Answer with the rewritten prompt only."
)

TEMPLATE_SUFFIX = "cinematic shot, rich detail, natural lighting, smooth camera motion"


class PromptEnhancer(Protocol):
    name: str

    def enhance(self, prompt: str) -> str: ...


class TemplateEnhancer:
    """Deterministic: normalises the prompt and appends the cinematographic details."""

    name = "template"

    def enhance(self, prompt: str) -> str:
        prompt = check_text("prompt", prompt).rstrip(" .,;")
        return f"{prompt}, {TEMPLATE_SUFFIX}."


class ChatEnhancer:
    """An OpenAI-compatible ``/chat/completions`` endpoint (URL and key come from the profile/env)."""

    name = "openai"

    def __init__(self, spec: PromptSpec):
        self.spec = spec

    def enhance(self, prompt: str) -> str:
        import httpx

        prompt = check_text("prompt", prompt)
        headers = {}
        if key := os.environ.get(self.spec.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.spec.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": prompt}],
            "max_tokens": self.spec.max_new_tokens,
            "temperature": self.spec.temperature,
        }
        url = self.spec.base_url.rstrip("/") + "/chat/completions"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.spec.timeout_s)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPError as exc:
            raise MoraError(f"prompt endpoint {url} failed: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError):
            raise MoraError(f"prompt endpoint {url} gave no chat completion") from None
        return _clean(text, fallback=prompt)


class TransformersEnhancer:
    """A local causal LM (``transformers`` text-generation) with its chat template."""

    name = "transformers"

    def __init__(self, spec: PromptSpec, device: str = "cpu"):
        self.spec = spec
        self.device = device

    def enhance(self, prompt: str) -> str:
        from agents.cache import MODEL_CACHE

        prompt = check_text("prompt", prompt)
        generate = MODEL_CACHE.get(("text-generation", self.spec.model, self.device),
                                   self._load)
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": prompt}]
        out = generate(messages, max_new_tokens=self.spec.max_new_tokens, do_sample=False)
        return _clean(out[0]["generated_text"][-1]["content"], fallback=prompt)

    def _load(self):
        from transformers import pipeline

        try:
            return pipeline("text-generation", model=self.spec.model, device=self.device)
        except OSError as exc:
            raise MoraError(f"prompt model '{self.spec.model}' is not available locally: "
                            f"{str(exc).splitlines()[0]}") from None


def _clean(text: str, fallback: str) -> str:
    text = " ".join(str(text).split()).strip().strip('"')
    return text or fallback


def make_enhancer(spec: PromptSpec, device: str = "cpu") -> PromptEnhancer:
    if spec.backend == "openai":
        return ChatEnhancer(spec)
    if spec.backend == "transformers":
        return TransformersEnhancer(spec, device)
    return TemplateEnhancer()
