"""The agents of one profile, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from agents.connector import ConnectorAgent
from agents.image_to_image import ImageToImageAgent
from agents.image_to_video import ImageToVideoAgent
from agents.loading import Runtime
from agents.prompt import PromptEnhancer, make_enhancer
from agents.text_to_image import TextToImageAgent
from configs.schema import Profile


@dataclass(frozen=True)
class AgentSet:
    profile: Profile
    runtime: Runtime
    enhancer: PromptEnhancer
    text_to_image: TextToImageAgent
    image_to_image: ImageToImageAgent
    image_to_video: ImageToVideoAgent
    connector: ConnectorAgent


_AGENT_SETS: dict[str, AgentSet] = {}


def agents_for(profile: Profile) -> AgentSet:
    """One AgentSet per distinct profile; the pipelines live in the process-wide model cache."""
    key = profile.model_dump_json()
    if key not in _AGENT_SETS:
        _AGENT_SETS[key] = _build(profile)
    return _AGENT_SETS[key]


def _build(profile: Profile) -> AgentSet:
    runtime = Runtime.for_profile(profile)
    return AgentSet(
        profile=profile,
        runtime=runtime,
        enhancer=make_enhancer(profile.prompt, runtime.device),
        text_to_image=TextToImageAgent(profile.text_to_image, runtime),
        image_to_image=ImageToImageAgent(profile.image_to_image, runtime),
        image_to_video=ImageToVideoAgent(profile.image_to_video, runtime),
        connector=ConnectorAgent(profile.connector, runtime),
    )
