"""Agents on the tiny zoo: loaded with from_pretrained from MORA_HOME, cached per process."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from agents.cache import MODEL_CACHE
from agents.loading import Runtime, load_pipeline, resolve_weights
from agents.prompt import ChatEnhancer, TemplateEnhancer
from agents.registry import agents_for
from configs import load_profile
from configs.schema import PipelineSpec, PromptSpec
from configs.errors import MoraError
from configs.settings import mora_home


@pytest.fixture(scope="module")
def tiny(tiny_zoo):
    return agents_for(load_profile("tiny"))


def test_tiny_models_load_with_from_pretrained_from_mora_home(tiny):
    pipe = tiny.image_to_video.pipe
    assert type(pipe).__name__ == "StableVideoDiffusionPipeline"
    source = Path(pipe.config._name_or_path)
    assert source.is_relative_to(mora_home()) and (source / "model_index.json").is_file()


def test_chain_produces_profile_sized_outputs_deterministically(tiny):
    prompt = tiny.enhancer.enhance("a fox in the snow")
    image = tiny.text_to_image(prompt, seed=3)
    assert image.size == (64, 64)
    again = tiny.text_to_image(prompt, seed=3)
    assert np.array_equal(np.asarray(image), np.asarray(again))
    other = tiny.text_to_image(prompt, seed=4)
    assert not np.array_equal(np.asarray(image), np.asarray(other))
    edited = tiny.image_to_image(image, "make it night", seed=1)
    assert edited.size == (64, 64)
    frames = tiny.image_to_video(image, prompt, seed=2)
    assert len(frames) == 9 and frames[0].size == (64, 64)
    transition = tiny.connector(frames[-1], edited, prompt, seed=5)
    assert len(transition) == 9 and transition[0].size == (64, 64)


def test_second_use_loads_nothing(tiny):
    tiny.text_to_image("warm up", seed=0)
    loads = MODEL_CACHE.stats.loads
    # Whether an earlier test in this process (pytest-xdist splits the module) loaded SVD.
    svd_loaded = _loaded("tiny:svd")
    again = agents_for(load_profile("tiny"))  # a fresh profile object, as a second task has
    again.text_to_image("another prompt", seed=1)
    again.image_to_video(again.text_to_image("x", 2), "x", seed=2)
    assert MODEL_CACHE.stats.loads == loads + (0 if svd_loaded else 1)
    loads = MODEL_CACHE.stats.loads
    again.image_to_video(again.text_to_image("y", 3), "y", seed=3)
    assert MODEL_CACHE.stats.loads == loads


def _loaded(model: str) -> bool:
    weights = resolve_weights(model)
    return any(weights in key for key in MODEL_CACHE.keys())


def test_bad_agent_inputs_are_one_line_errors(tiny):
    with pytest.raises(MoraError, match="prompt is empty"):
        tiny.text_to_image("   ", seed=0)
    with pytest.raises(MoraError, match="seed must be"):
        tiny.text_to_image("ok", seed=-1)
    with pytest.raises(MoraError, match="control characters"):
        tiny.enhancer.enhance("bad\x00prompt")


def test_missing_real_weights_offline_name_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = PipelineSpec(pipeline="StableVideoDiffusionPipeline", model="nobody/no-such-model",
                        height=64, width=64, num_frames=9, fps=8, steps=2, guidance=1.0)
    with pytest.raises(MoraError) as err:
        load_pipeline(spec, Runtime(device="cpu", dtype="float32"))
    message = str(err.value)
    assert "nobody/no-such-model" in message and "huggingface-cli download" in message
    assert "\n" not in message


def test_unknown_pipeline_class_and_missing_folder():
    runtime = Runtime(device="cpu", dtype="float32")
    spec = PipelineSpec(pipeline="NoSuchPipeline", model="tiny:sd3", height=64, width=64,
                        steps=2, guidance=1.0)
    with pytest.raises(MoraError, match="'NoSuchPipeline' is not a diffusers pipeline"):
        load_pipeline(spec, runtime)
    with pytest.raises(MoraError, match="does not exist"):
        resolve_weights("./no/such/folder")


def test_template_enhancer_is_deterministic():
    enhancer = TemplateEnhancer()
    out = enhancer.enhance("  a cat   surfing. ")
    assert out == enhancer.enhance("a cat surfing")
    assert out.startswith("a cat surfing, ") and "camera" in out


class _ChatHandler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatHandler.seen.append((self.path, self.headers.get("Authorization"), body))
        reply = {"choices": [{"message": {"role": "assistant",
                                          "content": '"A cat surfs a glassy wave at dawn."'}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_chat_enhancer_talks_openai_protocol(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MORA_TEST_KEY", "sk-test")
        spec = PromptSpec(backend="openai", model="qwen", api_key_env="MORA_TEST_KEY",
                          base_url=f"http://127.0.0.1:{server.server_port}/v1")
        assert ChatEnhancer(spec).enhance("cat surfing") == "A cat surfs a glassy wave at dawn."
        path, auth, body = _ChatHandler.seen[-1]
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
        assert body["model"] == "qwen" and body["messages"][-1]["content"] == "cat surfing"
    finally:
        server.shutdown()


def test_chat_enhancer_unreachable_is_one_line_error():
    spec = PromptSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(MoraError, match="prompt endpoint .* failed"):
        ChatEnhancer(spec).enhance("cat")


def test_offline_prompt_generator_is_seeded_and_varied():
    enhancer = TemplateEnhancer()
    first = enhancer.generate(8, seed=1)
    assert first == enhancer.generate(8, seed=1) and first != enhancer.generate(8, seed=2)
    assert all(", " in p and len(p.split()) >= 6 for p in first)


def test_near_duplicate_prompts_are_removed_with_sentence_embeddings():
    from agents.prompt import deduplicate

    kept = deduplicate(["a cat surfing a big wave", "a cat surfing on a big wave",
                        "a rocket lifting off at dawn", "a rocket lifting off at dawn"])
    assert kept == ["a cat surfing a big wave", "a rocket lifting off at dawn"]
    assert deduplicate(["a rocket lifting off at sunrise"], seen=["a rocket lifting off at dawn"]) == []


def test_training_prompts_returns_n_distinct(monkeypatch):
    from agents.prompt import training_prompts

    prompts = training_prompts(TemplateEnhancer(), 12, seed=0)
    assert len(prompts) == 12 and len(set(prompts)) == 12

    class Repetitive(TemplateEnhancer):
        def generate(self, n, seed):
            return ["the same prompt"] * n

    with pytest.raises(MoraError, match="only 1 distinct prompts"):
        training_prompts(Repetitive(), 3, seed=0, max_rounds=2)


def test_chat_enhancer_generates_prompt_lists():
    from agents.prompt import _parse_prompt_list

    assert _parse_prompt_list('Here you go: ["a fox in snow", "a tram at night"]') == \
        ["a fox in snow", "a tram at night"]
    assert _parse_prompt_list("1. a fox in snow\n2) a tram at night\n") == \
        ["a fox in snow", "a tram at night"]
