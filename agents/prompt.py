"""Prompt enhancer agent (paper A.5): refine a user prompt into one a video model follows well.

Backends: a deterministic template (no model; the tiny profile), any OpenAI-compatible chat
endpoint (vLLM, Ollama, OpenAI), a local transformers causal LM, or the `shapes` world's grammar
(configs/world/: its models were trained on exactly its captions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from agents.base import check_text
from configs.schema import PromptSpec
from configs.errors import MoraError

SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-video model. Keep the user's subject and action; add the "
    "setting, lighting, camera movement and visual style in one vivid paragraph of at most 80 "
    "words. Answer with the rewritten prompt only."
)

TEMPLATE_SUFFIX = "cinematic shot, rich detail, natural lighting, smooth camera motion"


GENERATE_PROMPT = (
    "Write {n} diverse, concrete prompts for a text-to-video model, each one sentence naming a "
    "subject, an action, a setting and a visual style. Answer with a JSON list of strings only."
)
FEW_SHOT_INTRO = "Examples of the prompts wanted:"
FEW_SHOT_ASK = ("Write {n} new prompts in the spirit of these examples, each different from "
                "every example and from each other (variation {seed}).")


def generation_request(n: int, seed: int, examples: Sequence[str] = ()) -> tuple[str, str]:
    """(system, user) messages asking an LLM for ``n`` training prompts: zero-shot, or few-shot
    with ``examples`` from a seed prompt set (the paper generated its prompts with GPT-4 in both
    settings from the Sora report's prompts, §4.1)."""
    if not examples:
        return GENERATE_PROMPT.format(n=n), f"seed {seed}"
    shots = "\n".join(f"{i}. {example}" for i, example in enumerate(examples, 1))
    return (GENERATE_PROMPT.format(n=n),
            f"{FEW_SHOT_INTRO}\n{shots}\n\n{FEW_SHOT_ASK.format(n=n, seed=seed)}")


class PromptEnhancer(Protocol):
    name: str

    def enhance(self, prompt: str) -> str: ...

    def generate(self, n: int, seed: int, examples: Sequence[str] = ()) -> list[str]:
        """``n`` candidate training prompts (duplicates possible; the caller deduplicates),
        few-shot from ``examples`` where the backend is a language model."""
        ...


class TemplateEnhancer:
    """Deterministic: normalises the prompt and appends the cinematographic details."""

    name = "template"

    def enhance(self, prompt: str) -> str:
        prompt = check_text("prompt", prompt).rstrip(" .,;")
        return f"{prompt}, {TEMPLATE_SUFFIX}."

    def generate(self, n: int, seed: int, examples: Sequence[str] = ()) -> list[str]:
        """Combinations of subject, action, setting and style drawn with ``seed`` (no model:
        ``examples`` are not used)."""
        import random

        from agents import prompt_bank as bank

        rng = random.Random(seed)
        return [f"{rng.choice(bank.SUBJECTS)} {rng.choice(bank.ACTIONS)} "
                f"{rng.choice(bank.SETTINGS)}, {rng.choice(bank.STYLES)}" for _ in range(n)]


class WorldEnhancer:
    """The `shapes` world's enhancer: a prompt of the world's grammar becomes its canonical
    caption (what the shapes zoo was trained on, agents/shapes/); anything else is refused in
    one line. Training prompts are drawn from the world's train split (never a held-out pair)."""

    name = "world"

    def enhance(self, prompt: str) -> str:
        from configs.world import parse

        scene = parse(check_text("prompt", prompt))
        if scene is None:
            raise MoraError(f"prompt {prompt!r} is not a caption of the shapes world (e.g. 'a red "
                            "circle moving left on a dark background'; configs/world/)")
        return scene.caption

    def generate(self, n: int, seed: int, examples: Sequence[str] = ()) -> list[str]:
        from configs.world import sample_scenes

        return [scene.caption for scene in sample_scenes(n, seed)]


class ChatEnhancer:
    """An OpenAI-compatible ``/chat/completions`` endpoint (URL and key come from the profile/env)."""

    name = "openai"

    def __init__(self, spec: PromptSpec):
        self.spec = spec

    def enhance(self, prompt: str) -> str:
        prompt = check_text("prompt", prompt)
        return _clean(self._chat(SYSTEM_PROMPT, prompt, self.spec.temperature), fallback=prompt)

    def generate(self, n: int, seed: int, examples: Sequence[str] = ()) -> list[str]:
        system, user = generation_request(n, seed, examples)
        text = self._chat(system, user, max(self.spec.temperature, 0.9),
                          max_tokens=self.spec.max_new_tokens * n, seed=seed)
        return _parse_prompt_list(text)

    def _chat(self, system: str, user: str, temperature: float, max_tokens: int | None = None,
              seed: int | None = None) -> str:
        import httpx

        headers = {}
        if key := os.environ.get(self.spec.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.spec.model,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user}],
            "max_tokens": max_tokens or self.spec.max_new_tokens,
            "temperature": temperature,
        }
        if seed is not None:  # OpenAI, vLLM and Ollama take it: a reproducible draw where served
            body["seed"] = seed
        url = self.spec.base_url.rstrip("/") + "/chat/completions"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.spec.timeout_s)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPError as exc:
            raise MoraError(f"prompt endpoint {url} failed: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError):
            raise MoraError(f"prompt endpoint {url} gave no chat completion") from None


class TransformersEnhancer:
    """A local causal LM (``transformers`` text-generation) with its chat template."""

    name = "transformers"

    def __init__(self, spec: PromptSpec, device: str = "cpu"):
        self.spec = spec
        self.device = device

    def enhance(self, prompt: str) -> str:
        prompt = check_text("prompt", prompt)
        return _clean(self._chat(SYSTEM_PROMPT, prompt, self.spec.max_new_tokens), fallback=prompt)

    def generate(self, n: int, seed: int, examples: Sequence[str] = ()) -> list[str]:
        from transformers import set_seed

        set_seed(seed)
        system, user = generation_request(n, seed, examples)
        return _parse_prompt_list(self._chat(system, user, self.spec.max_new_tokens * n,
                                             sample=True))

    def _chat(self, system: str, user: str, max_new_tokens: int, sample: bool = False) -> str:
        from agents.cache import MODEL_CACHE

        generate = MODEL_CACHE.get(("text-generation", self.spec.model, self.device), self._load)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        out = generate(messages, max_new_tokens=max_new_tokens, do_sample=sample)
        return out[0]["generated_text"][-1]["content"]

    def _load(self):
        from transformers import pipeline

        try:
            return pipeline("text-generation", model=self.spec.model, device=self.device)
        except OSError as exc:
            raise MoraError(f"prompt model '{self.spec.model}' is not available locally: "
                            f"{str(exc).splitlines()[0]}") from None


def _parse_prompt_list(text: str) -> list[str]:
    """A JSON list of strings, or failing that one prompt per non-empty line."""
    import json

    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            items = json.loads(text[start:end + 1])
            if isinstance(items, list):
                return [_clean(str(i), "") for i in items if str(i).strip()]
        except ValueError:
            pass
    lines = (line.strip().lstrip("-*0123456789.) ").strip() for line in text.splitlines())
    return [_clean(line, "") for line in lines if len(line) > 3]


def _clean(text: str, fallback: str) -> str:
    text = " ".join(str(text).split()).strip().strip('"')
    return text or fallback


def make_enhancer(spec: PromptSpec, device: str = "cpu") -> PromptEnhancer:
    if spec.backend == "openai":
        return ChatEnhancer(spec)
    if spec.backend == "transformers":
        return TransformersEnhancer(spec, device)
    if spec.backend == "world":
        return WorldEnhancer()
    return TemplateEnhancer()


def deduplicate(prompts: list[str], threshold: float = 0.9,
                seen: list[str] = ()) -> list[str]:
    """Drop prompts whose MiniLM sentence embedding is within ``threshold`` cosine of an earlier
    prompt (or of one in ``seen``, e.g. earlier rounds' prompts)."""
    from metrics.text import embed

    candidates = list(dict.fromkeys(p for p in prompts if p and p not in seen))
    if not candidates:
        return []
    vectors = embed(list(seen) + candidates)
    kept: list[int] = list(range(len(seen)))
    for i in range(len(seen), len(vectors)):
        if not kept or float((vectors[kept] @ vectors[i]).max()) < threshold:
            kept.append(i)
    return [candidates[i - len(seen)] for i in kept[len(seen):]]


def training_prompts(enhancer: PromptEnhancer, n: int, seed: int, threshold: float = 0.9,
                     seen: list[str] = (), max_rounds: int = 10, seed_prompts: Sequence[str] = (),
                     few_shot: int = 0) -> list[str]:
    """``n`` distinct prompts: generate, deduplicate, and ask again until there are enough.

    With ``seed_prompts``, each request shows ``few_shot`` of them (drawn with the request's
    seed) as examples; a prompt too close to any seed prompt counts as a duplicate too."""
    import random

    kept: list[str] = []
    for attempt in range(max_rounds):
        draw = seed + 7919 * attempt
        shots = random.Random(draw).sample(list(seed_prompts), min(few_shot, len(seed_prompts)))
        # Examples only when there are some: enhancers written before few-shot take (n, seed).
        wanted = 2 * (n - len(kept))
        fresh = enhancer.generate(wanted, draw, shots) if shots else enhancer.generate(wanted, draw)
        kept += deduplicate(fresh, threshold, seen=[*seen, *seed_prompts, *kept])
        if len(kept) >= n:
            return kept[:n]
    raise MoraError(f"only {len(kept)} distinct prompts after {max_rounds} rounds of generation "
                    f"(asked for {n}); lower the similarity threshold or the prompt count")
