"""Paper-faithful prompt generation: an LLM behind an OpenAI-compatible chat endpoint, asked
few-shot with examples from the config's seed prompt set, its answers deduplicated."""

from __future__ import annotations

import json

import pytest
import yaml

from configs import load_profile, load_training_config
from configs.training import load_seed_prompts
from tests.test_training import ScriptedJudges, judges_endpoint  # noqa: F401 (fixture)

SEED_FILE = "prompts/sora-seed.yaml"


def test_paper_config_generates_prompts_few_shot_from_the_seed_set(judges_endpoint, tmp_path,
                                                                   monkeypatch):
    """A scripted OpenAI-compatible endpoint on loopback checks the requests it receives."""
    from configs.training import CONFIGS_DIR
    from tasks.candidates import generate_prompts

    paper = yaml.safe_load((CONFIGS_DIR / "training" / "paper.yaml").read_text())
    assert paper["prompt_generation"]["seed_prompts"] == SEED_FILE
    paper["prompt_generation"]["base_url"] = judges_endpoint
    paper["prompts"] = 3
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(paper))
    cfg = load_training_config(str(path))
    seeds = load_seed_prompts(SEED_FILE)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ScriptedJudges.script = {"gpt-4o": [
        # a repeat, a copy of a seed prompt and one new prompt: one survives; then two more.
        json.dumps(["A lantern-lit night market in Taipei, steam rising from food stalls, "
                    "handheld camera weaving through the crowd.",
                    "A lantern-lit night market in Taipei, steam rising from food stalls, "
                    "handheld camera weaving through the crowd.", seeds[0]]),
        "Here you are:\n" + json.dumps([
            "A glacier calves into a turquoise fjord under a grey sky, wide aerial shot.",
            "A barista in a cosy café pours latte art in slow motion, warm morning light."]),
    ]}
    prompts = generate_prompts.fn(load_profile("tiny"), cfg, 11, [])

    assert prompts == ["A lantern-lit night market in Taipei, steam rising from food stalls, "
                       "handheld camera weaving through the crowd.",
                       "A glacier calves into a turquoise fjord under a grey sky, wide aerial shot.",
                       "A barista in a cosy café pours latte art in slow motion, warm morning "
                       "light."]
    assert len(ScriptedJudges.requests) == 2
    body = ScriptedJudges.requests[0]
    assert ScriptedJudges.routes[0] == ("/v1/chat/completions", "Bearer sk-test")
    assert body["model"] == "gpt-4o" and body["seed"] == 11 and body["temperature"] == 1.0
    system, user = body["messages"]
    assert system["role"] == "system" and "Write 6 diverse" in system["content"]
    shown = [line.split(". ", 1)[1] for line in user["content"].splitlines()
             if line[:1].isdigit()]
    assert len(shown) == 4 and set(shown) <= set(seeds)  # four few-shot examples of the seed set
    assert "Write 6 new prompts" in user["content"]
    # The second request asks only for what is missing, with other examples drawn.
    second = ScriptedJudges.requests[1]
    assert "Write 4 diverse" in second["messages"][0]["content"] and second["seed"] != 11


def test_seed_prompt_file_is_checked(tmp_path):
    from pydantic import ValidationError

    from configs.training import PromptGeneration

    (tmp_path / "empty.yaml").write_text("[]\n")
    for path, problem in [("prompts/none.yaml", "does not exist"),
                          (str(tmp_path / "empty.yaml"), "non-empty YAML list")]:
        with pytest.raises(ValidationError, match=problem):
            PromptGeneration(backend="openai", base_url="http://x/v1", model="m",
                             seed_prompts=path)
