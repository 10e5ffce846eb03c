"""Judges (paper §4.2, A.6): criteria, answer parsing, metric judges, the OpenAI-compatible
vision judge against a loopback HTTP server, and the tiny Qwen2-VL / LLaVA-OneVision judges."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from agents.cache import ModelCache
from agents.judges import (
    CRITERIA,
    Judgement,
    MetricCache,
    MetricJudge,
    OpenAIVisionJudge,
    TransformersVisionJudge,
    common_best,
    criterion_text,
    draw_criterion,
    make_judge,
    parse_ranking,
    rank_all,
    sample_frame_indices,
)
from configs.judges import CRITERION_WEIGHT_FACTORS, DEFAULT_METRIC_JUDGES, JudgeSpec
from metrics import METRIC_NAMES
from configs.errors import MoraError

# --------------------------------------------------------------------------- criteria


def test_criteria_are_the_papers_ten():
    assert sorted(CRITERIA) == list(range(1, 11))
    assert CRITERIA[3] == "Examine the temporal coherence, identifying the best frame-to-frame continuity."
    assert CRITERIA[10] == ("Examine frame rate consistency and smoothness of motion, ranking videos based on "
                            "natural motion without lag or stuttering.")
    assert CRITERIA[1].startswith("Evaluate the visual clarity and resolution, ranking videos based on image sharpness")
    assert criterion_text(7) == CRITERIA[7]
    for bad in (0, 11, "3", True, 2.0):
        with pytest.raises(MoraError, match="criterion"):
            criterion_text(bad)


def test_draw_criterion_is_seeded():
    import random

    assert [draw_criterion(random.Random(5)) for _ in range(3)] == [draw_criterion(random.Random(5))] * 3
    drawn = {draw_criterion(np.random.default_rng(s)) for s in range(200)}
    assert drawn == set(CRITERIA)


def test_criterion_weight_table_names_known_criteria_and_metrics():
    assert set(CRITERION_WEIGHT_FACTORS) <= set(CRITERIA)
    for factors in CRITERION_WEIGHT_FACTORS.values():
        assert set(factors) <= set(METRIC_NAMES)
        assert all(f > 0 for f in factors.values())
    stability = DEFAULT_METRIC_JUDGES[0]
    w10, w4 = stability.weights_for(10), stability.weights_for(4)
    assert w10["motion_smoothness"] > w4["motion_smoothness"]  # criterion 10: smoothness up
    assert w4 == stability.weights  # criterion 4 (narrative): unchanged


# --------------------------------------------------------------------------- spec


def test_default_metric_judges_weigh_motion_against_consistency():
    a, b = DEFAULT_METRIC_JUDGES
    assert a.name != b.name and a.weights != b.weights
    for spec in DEFAULT_METRIC_JUDGES:
        assert spec.backend == "metrics"
        assert spec.weights["dynamic_degree"] > 0
        assert spec.weights["subject_consistency"] > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="metrics", weights={"sharpness": 1.0}), "unknown metric"),
    (dict(backend="metrics", weights={"tcon": 1.0}), "another video"),
    (dict(backend="metrics", weights={"dynamic_degree": -1.0}), ">= 0"),
    (dict(backend="metrics", weights={"dynamic_degree": 0.0}), "positive weight"),
    (dict(backend="metrics"), "positive weight"),
    (dict(backend="openai", model="m"), "base_url"),
    (dict(backend="openai", base_url="http://x", model="m", weights={"dynamic_degree": 1.0}), "metrics backend"),
    (dict(backend="transformers"), "needs model"),
    (dict(backend="transformers", model="m", arch="blip"), "qwen2_vl"),
    (dict(backend="metrics", weights={"dynamic_degree": 1.0}, temperature=0.5), "Extra inputs"),
    (dict(backend="openai", base_url="http://x", model="m", frames_per_video=0), "greater than 0"),
])
def test_judge_spec_validation(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        JudgeSpec(name="j", **kwargs)


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, expected", [
    ("Ranking: 2 > 1 > 4 > 3", [1, 0, 3, 2]),
    ("ranking:2>1>4>3", [1, 0, 3, 2]),
    ("[3, 1, 2, 4]", [2, 0, 1, 3]),
    ("Video 2, Video 4, Video 1, Video 3", [1, 3, 0, 2]),
    ('{"ranking": [4, 3, 2, 1]}', [3, 2, 1, 0]),
    ('```json\n{"ranking": ["Video 2", "Video 1", "Video 3", "Video 4"]}\n```', [1, 0, 2, 3]),
    ('Sure! {"reason": "sharp", "Ranking": [1, 2, 3, 4]}', [0, 1, 2, 3]),
    ("**Ranking:** Video 3 > Video 1 > Video 2 > Video 4.", [2, 0, 1, 3]),
    ("After comparing the frames carefully.\nRanking: 3 > 1 > 2 > 4", [2, 0, 1, 3]),
    ("Ranking (best to worst): video #4 -> video #2 -> video #1 -> video #3", [3, 1, 0, 2]),
    ("1. Video 3\n2. Video 1\n3. Video 4\n4. Video 2", [2, 0, 3, 1]),
    ("Rank 1: Video 2\nRank 2: Video 3\nRank 3: Video 4\nRank 4: Video 1", [1, 2, 3, 0]),
    ("3 1 2 4", [2, 0, 1, 3]),
    ("Ranking: 3, 1, 2, 4\nVideo 3 is the best because 1 2 3 4 are ...", [2, 0, 1, 3]),
    ("Video 2 then Video 1 then Video 4 then Video 3", [1, 0, 3, 2]),
    # not a full ranking of all four
    ("", None),
    ("garbage ∑ßÅ", None),
    ("I cannot rank these videos.", None),
    ("Ranking: 2 > 1", None),
    ("Ranking: 2 > 2 > 1 > 3", None),
    ("Ranking: 1 > 2 > 3 > 5", None),
    ("Ranking: 0 > 1 > 2 > 3", None),
    ("Ranking: 1 > 2 > 3 > 4 > 1", None),
    ("[3, 1, 2]", None),
    ('{"ranking": [1, 2, 3, true]}', None),
    ("Video 1 is blurry. Video 2 is sharp. Video 3 flickers. Video 4 is fine.", None),
    ("1. Video 3\n2. Video 1\n3. Video 4", None),
])
def test_parse_ranking(text, expected):
    assert parse_ranking(text, 4) == expected


def test_parse_ranking_other_sizes():
    assert parse_ranking("Ranking: 2 > 1", 2) == [1, 0]
    assert parse_ranking("1", 1) == [0]
    assert parse_ranking("Ranking: 2 > 1 > 3", 2) is None
    assert parse_ranking("Ranking: 2 > 1", 0) is None
    assert parse_ranking(None, 2) is None  # type: ignore[arg-type]


def test_sample_frame_indices_are_even_and_bounded():
    assert sample_frame_indices(16, 4) == [0, 5, 10, 15]
    assert sample_frame_indices(2, 4) == [0, 1]
    assert sample_frame_indices(9, 1) == [0]


# --------------------------------------------------------------------------- synthetic candidates

T, SIZE, FPS = 16, 64, 8.0


@pytest.fixture(scope="module")
def candidates() -> dict[str, np.ndarray]:
    """static, smooth motion (2 px/frame pan), noise, jitter (random +-8 px shake); 16 x 64 x 64."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    scene = cv2.GaussianBlur(cv2.resize(base, (160, 160), interpolation=cv2.INTER_CUBIC), (0, 0), 1.5)

    def crop(dx: int, dy: int) -> np.ndarray:
        return scene[48 + dy:48 + dy + SIZE, 48 + dx:48 + dx + SIZE]

    return {
        "static": np.stack([crop(0, 0)] * T),
        "smooth": np.stack([crop(2 * t - 16, 0) for t in range(T)]),
        "noise": rng.integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8),
        "jitter": np.stack([crop(*rng.integers(-8, 9, 2)) for _ in range(T)]),
    }


@pytest.fixture(scope="module")
def default_judges() -> tuple[MetricJudge, MetricJudge]:
    return tuple(make_judge(spec) for spec in DEFAULT_METRIC_JUDGES)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def shared_cache() -> MetricCache:
    return MetricCache()


def test_noise_is_ranked_last_by_both_default_judges(candidates, default_judges, shared_cache):
    names = list(candidates)
    videos = [candidates[n] for n in names]
    for criterion in CRITERIA:
        for judge in default_judges:
            j = judge.rank(videos, FPS, "a red kite over a beach", criterion, metric_cache=shared_cache)
            assert sorted(j.ranking) == [0, 1, 2, 3]
            assert names[j.ranking[-1]] == "noise", (judge.name, criterion, j.raw)
            assert len(j.scores) == 4 and j.scores[j.ranking[0]] == max(j.scores)


def test_default_judges_can_disagree_and_agree(candidates, default_judges, shared_cache):
    stability, motion = default_judges

    def best(judge, names, criterion=1):
        j = judge.rank([candidates[n] for n in names], FPS, "a kite", criterion, metric_cache=shared_cache)
        return names[j.best]

    # stability prefers the still shot, motion the shaky one that moves
    assert best(stability, ["static", "jitter"]) == "static"
    assert best(motion, ["static", "jitter"]) == "jitter"
    # a smooth pan beats noise for both
    assert best(stability, ["noise", "smooth"]) == best(motion, ["noise", "smooth"]) == "smooth"
    # neither judge rewards standing still above smooth motion on criterion 10 (motion smoothness)
    assert best(stability, ["static", "smooth"], 10) == best(motion, ["static", "smooth"], 10) == "smooth"


def test_metric_judge_is_deterministic_and_explains_itself(candidates, default_judges):
    videos = list(candidates.values())
    a = default_judges[1].rank(videos, FPS, "a kite", 9)
    b = default_judges[1].rank(videos, FPS, "a kite", 9)
    assert a == b
    assert isinstance(a, Judgement) and a.judge == "metrics-motion" and a.backend == "metrics"
    assert a.criterion_id == 9 and a.criterion == CRITERIA[9]
    raw = json.loads(a.raw)
    assert [c["score"] for c in raw["candidates"]] == a.scores
    assert raw["ranking"] == [i + 1 for i in a.ranking]
    assert abs(sum(raw["weights"].values()) - 1.0) < 1e-9
    assert set(raw["weights"]) == set(DEFAULT_METRIC_JUDGES[1].weights)
    # identical candidates tie and keep their order
    tie = default_judges[0].rank([videos[1], videos[1]], FPS, "x", 1)
    assert tie.ranking == [0, 1] and tie.scores[0] == tie.scores[1]


def test_both_judges_share_metric_computation(candidates, default_judges):
    stability, motion = default_judges
    videos = list(candidates.values())
    cache = MetricCache()
    stability.rank(videos, FPS, "a kite", 2, metric_cache=cache)
    first = set(stability.spec.weights_for(2))
    assert cache.computed == len(videos) * len(first) and cache.hits == 0
    motion.rank(videos, FPS, "a kite", 2, metric_cache=cache)
    second = set(motion.spec.weights_for(2))
    assert cache.computed == len(videos) * len(first | second)
    assert cache.hits == len(videos) * len(first & second)
    # the cache is keyed by content: a copy of a candidate is not computed again
    computed = cache.computed
    stability.rank([v.copy() for v in videos], FPS, "another prompt", 2, metric_cache=cache)
    assert cache.computed == computed


def test_rank_all_and_common_best(candidates, default_judges):
    cache = MetricCache()
    split = rank_all(default_judges, [candidates["static"], candidates["jitter"]], FPS, "p", 1, metric_cache=cache)
    assert [j.judge for j in split] == ["metrics-stability", "metrics-motion"]
    assert common_best(split) is None
    agreed = rank_all(default_judges, [candidates["noise"], candidates["smooth"]], FPS, "p", 1)
    assert common_best(agreed) == 1
    unparsed = agreed[0].model_copy(update={"ranking": None})
    assert common_best([unparsed, agreed[1]]) is None and common_best([]) is None


def test_metric_judge_renormalises_over_available_metrics(candidates):
    videos = [candidates["smooth"], candidates["static"][:2]]  # motion smoothness needs >= 3 frames
    spec = JudgeSpec(name="m", weights={"motion_smoothness": 1.0, "subject_consistency": 1.0,
                                        "aesthetic_quality": 5.0})
    j = MetricJudge(spec).rank(videos, FPS, "p", 4)
    raw = json.loads(j.raw)
    assert raw["weights"] == {"subject_consistency": 1.0}
    assert raw["skipped"] == ["aesthetic_quality", "motion_smoothness"]
    assert j.ranking == [1, 0]  # the still pair is perfectly consistent
    none = MetricJudge(JudgeSpec(name="a", weights={"aesthetic_quality": 1.0})).rank(videos, FPS, "p", 8)
    assert none.ranking is None and none.scores is None and "aesthetic_quality" in none.raw


def test_metric_judge_rejects_bad_input(candidates, default_judges):
    judge = default_judges[0]
    with pytest.raises(MoraError, match="non-empty"):
        judge.rank([], FPS, "p", 1)
    with pytest.raises(MoraError, match="candidate 2"):
        judge.rank([candidates["smooth"], candidates["smooth"].astype(np.float32)], FPS, "p", 1)
    with pytest.raises(MoraError, match="fps"):
        judge.rank([candidates["smooth"]], 0, "p", 1)
    with pytest.raises(MoraError, match="criterion"):
        judge.rank([candidates["smooth"]], FPS, "p", 11)


# --------------------------------------------------------------------------- OpenAI-compatible endpoint


class _ChatServer:
    """A loopback /v1/chat/completions server that records requests and answers ``answer``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.answer = "Ranking: 3 > 1 > 2 > 4"
        self.status = 200
        self.refuse_response_format = False  # an endpoint without structured output
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"path": self.path, "body": json.loads(body)})
                outer.headers.append(dict(self.headers))
                if outer.refuse_response_format and "response_format" in outer.requests[-1]["body"]:
                    payload = b'{"error": "response_format json_schema is not supported"}'
                    self.send_response(400)
                elif outer.status != 200:
                    payload = b'{"error": "overloaded"}'
                    self.send_response(outer.status)
                else:
                    payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                   "content": outer.answer}}]}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    server = _ChatServer()
    yield server
    server.close()


def _openai_spec(url: str, **kw) -> JudgeSpec:
    return JudgeSpec(name="qwen2-vl@vllm", backend="openai", base_url=url, model="Qwen/Qwen2-VL-7B-Instruct",
                     api_key_env="MORA_TEST_JUDGE_KEY", **kw)


def test_openai_judge_sends_frames_and_parses_the_ranking(chat_server, candidates, monkeypatch):
    monkeypatch.setenv("MORA_TEST_JUDGE_KEY", "sk-test")
    videos = list(candidates.values())
    judge = make_judge(_openai_spec(chat_server.url, max_image_side=32))
    assert isinstance(judge, OpenAIVisionJudge)
    j = judge.rank(videos, FPS, "a red kite over a beach", 5)
    assert j.ranking == [2, 0, 1, 3] and j.best == 2
    assert j.raw == "Ranking: 3 > 1 > 2 > 4" and j.backend == "openai" and j.criterion == CRITERIA[5]

    (request,) = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert chat_server.headers[0]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "Qwen/Qwen2-VL-7B-Instruct" and body["temperature"] == 0.0
    system, *users = body["messages"]
    assert system["role"] == "system" and "JSON" in system["content"]
    assert body["response_format"]["type"] == "json_schema"  # structured output first
    assert {u["role"] for u in users} == {"user"} and len(users) == 1 + 4 + 1  # intro, a video each, closing
    parts = [p for u in users for p in u["content"]]
    images = [p for p in parts if p["type"] == "image_url"]
    texts = " ".join(p["text"] for p in parts if p["type"] == "text")
    assert len(images) == 4 * 4  # C x frames_per_video
    for part in images:
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        png = base64.b64decode(url.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert max(Image.open(io.BytesIO(png)).size) <= 32
    assert CRITERIA[5] in texts and "a red kite over a beach" in texts
    # each video's message: its label, then its four frames, nothing else
    for i, user in enumerate(users[1:5], 1):
        assert user["content"][0]["text"].startswith(f"Video {i}:")
        assert [p["type"] for p in user["content"][1:]] == ["image_url"] * 4


def test_openai_judge_garbage_answer_gives_no_ranking(chat_server, candidates):
    chat_server.answer = "These videos are all very nice!"
    j = make_judge(_openai_spec(chat_server.url, frames_per_video=2)).rank(
        [candidates["smooth"], candidates["static"]], FPS, "p", 1)
    assert j.ranking is None and j.raw == "These videos are all very nice!"
    assert sum(p["type"] == "image_url" for m in chat_server.requests[0]["body"]["messages"][1:]
               for p in m["content"]) == 4


def test_openai_judge_asks_for_json_and_falls_back_to_text(chat_server, candidates):
    videos = [candidates["smooth"], candidates["static"]]
    spec = _openai_spec(chat_server.url, frames_per_video=1)
    chat_server.answer = '{"ranking": [2, 1]}'
    assert make_judge(spec).rank(videos, FPS, "p", 1).ranking == [1, 0]
    schema = chat_server.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["ranking"]["minItems"] == schema["properties"]["ranking"]["maxItems"] == 2
    # An endpoint without structured output is asked again in free text, then no more in JSON.
    chat_server.refuse_response_format, chat_server.answer = True, "Ranking: 1 > 2"
    judge = make_judge(spec)
    assert judge.rank(videos, FPS, "p", 1).ranking == [0, 1] and len(chat_server.requests) == 3
    last = chat_server.requests[-1]["body"]
    assert "response_format" not in last and "Ranking:" in last["messages"][0]["content"]
    judge.rank(videos, FPS, "p", 1)
    assert len(chat_server.requests) == 4 and "response_format" not in chat_server.requests[-1]["body"]
    plain = make_judge(spec.model_copy(update={"structured_output": False}))
    assert plain.rank(videos, FPS, "p", 1).ranking == [0, 1]
    assert "response_format" not in chat_server.requests[-1]["body"]


def test_openai_judge_errors_are_one_line_and_name_the_endpoint(chat_server, candidates):
    chat_server.status = 503
    with pytest.raises(MoraError, match=r"judge endpoint http://127\.0\.0\.1:\d+/v1/chat/completions failed") as err:
        make_judge(_openai_spec(chat_server.url)).rank([candidates["smooth"]], FPS, "p", 1)
    assert "\n" not in str(err.value)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(MoraError, match=f"judge endpoint {url}/chat/completions failed"):
        make_judge(_openai_spec(url, timeout_s=5)).rank([candidates["smooth"]], FPS, "p", 1)


# --------------------------------------------------------------------------- tiny MLLM judges


@pytest.mark.parametrize("arch, name", [("qwen2_vl", "judge-qwen2-vl"), ("llava_onevision", "judge-llava-onevision")])
def test_tiny_mllm_judge_runs_end_to_end(arch, name):
    from agents.judges.architectures import MODEL_CLASSES
    from agents.tiny import ensure_tiny_judge, is_judge_built, tiny_judge_dir
    from configs.settings import mora_home

    folder = ensure_tiny_judge(arch)
    assert folder == mora_home() / "tiny" / name == tiny_judge_dir(arch) and is_judge_built(arch)
    marker = (folder / "mora-tiny.json").stat().st_mtime_ns
    assert ensure_tiny_judge(arch) == folder and (folder / "mora-tiny.json").stat().st_mtime_ns == marker
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [MODEL_CLASSES[arch]]
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()

    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8) for _ in range(2)]
    cache = ModelCache()
    spec = JudgeSpec(name=name, backend="transformers", model=f"tiny:{name}", frames_per_video=2, max_new_tokens=12)
    judge = make_judge(spec, cache=cache)
    assert isinstance(judge, TransformersVisionJudge)
    j = judge.rank(videos, FPS, "a cat on a boat", 3)
    assert isinstance(j.raw, str) and j.backend == "transformers" and j.criterion == CRITERIA[3]
    assert j.ranking is None or sorted(j.ranking) == [0, 1]  # random weights: gibberish or, by chance, a ranking
    again = judge.rank(videos, FPS, "a cat on a boat", 3)
    assert again == j  # greedy decoding is deterministic
    assert cache.stats.loads == 1 and cache.stats.hits >= 1
    (key,) = cache.keys()
    assert str(folder) in key

    model, processor = judge.loaded()
    assert type(model).__name__ == MODEL_CLASSES[arch]
    if importlib.util.find_spec("torchvision") is None:
        assert type(processor.image_processor).__name__.endswith("Pil")  # transformers' PIL fallback
    assert processor.chat_template and processor.video_processor is None


def test_tiny_judge_builds_are_race_safe(tmp_path):
    from agents.tiny import ensure_tiny_judge

    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ensure_tiny_judge("llava_onevision", tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    root = tmp_path / "tiny"
    assert sorted(p.name for p in root.iterdir()) == [".judge-llava-onevision.lock", "judge-llava-onevision"]


def test_tiny_judge_tokenizer_has_the_vision_tokens_and_chat_template():
    from agents.tiny import build_judge_tokenizer

    qwen = build_judge_tokenizer("qwen2_vl")
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|video_pad|>"):
        assert qwen.convert_tokens_to_ids(token) != qwen.unk_token_id and token in qwen.all_special_tokens
    text = "Ranking: Video 3 > Video 1 — ünïcode ✓"
    assert qwen.decode(qwen(text).input_ids) == text  # byte-level: nothing unknown
    llava = build_judge_tokenizer("llava_onevision")
    assert "<image>" in llava.all_special_tokens and llava.chat_template
    assert len(llava("<image>").input_ids) == 1


def test_transformers_judge_missing_weights_is_one_line(candidates, tmp_path):
    spec = JudgeSpec(name="j", backend="transformers", model=str(tmp_path / "nowhere"), arch="qwen2_vl")
    with pytest.raises(MoraError, match="does not exist"):
        make_judge(spec, cache=ModelCache()).rank([candidates["smooth"]], FPS, "p", 1)
    spec = JudgeSpec(name="j", backend="transformers", model="Qwen/Qwen2-VL-2B-Instruct", arch="qwen2_vl")
    with pytest.raises(MoraError, match="Qwen/Qwen2-VL-2B-Instruct") as err:
        make_judge(spec, cache=ModelCache()).rank([candidates["smooth"]], FPS, "p", 1)
    assert "\n" not in str(err.value)
    with pytest.raises(MoraError, match="unknown tiny judge"):
        from agents.tiny import ensure_tiny_judge

        ensure_tiny_judge("blip")
