"""The data-free training loop on the tiny zoo: votes, human tie-breaks, the dataset, self-modulated
fine-tuning, reports, and resuming a round killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import yaml

from flows.training import train, training_round
from storage import open_store
from mora.cli_review import answer_review, pending_reviews
from tasks.review import CandidateDecision
from tasks.review import ReviewPolicy
from tasks.training import read_dataset

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")

SMALL = {
    "profile": "tiny-wan", "prompts": 2, "candidates": 2, "unattended": "judge_a",
    "finetune": {"target": "image_to_video", "modulation": "special_token", "method": "full",
                 "learning_rate": 0.001, "batch_size": 2, "gradient_checkpointing": False,
                 "mixed_precision": "no", "max_steps": 4, "checkpoint_every": 2, "ema": True,
                 "ema_decay": 0.9},
    "held_out_prompts": ["a red fox running through fresh snow"], "held_out_seeds": 2,
}


def write_config(tmp_path, **changes) -> str:
    data = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


class ScriptedJudges(BaseHTTPRequestHandler):
    """An OpenAI-compatible vision endpoint whose answers are scripted per judge (model name)."""

    script: dict[str, list[str]] = {}
    requests: list[dict] = []
    routes: list[tuple[str, str | None]] = []  # (path, Authorization header) of each request

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ScriptedJudges.requests.append(body)
        ScriptedJudges.routes.append((self.path, self.headers.get("Authorization")))
        answer = ScriptedJudges.script[body["model"]].pop(0)
        data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                    "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judges_endpoint():
    server = HTTPServer(("127.0.0.1", 0), ScriptedJudges)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ScriptedJudges.requests.clear()
    ScriptedJudges.routes.clear()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def scripted(endpoint: str) -> list[dict]:
    return [{"name": name, "backend": "openai", "base_url": endpoint, "model": name,
             "frames_per_video": 2} for name in ("judge-a", "judge-b")]


def test_round_accepts_escalates_to_a_human_and_discards(tmp_path, local_store, judges_endpoint):
    ScriptedJudges.script = {
        # prompt 1: both say 1 first → accepted; prompt 2: they differ → the human picks 2;
        # prompt 3: judge B's answer does not parse → disagreement → the human rejects.
        "judge-a": ["Ranking: 1 > 2", "Ranking: 1 > 2", "Ranking: 2 > 1"],
        "judge-b": ["[1, 2]", "Video 2, Video 1", "I like them both"],
    }
    # The held-out score after the round: 2 samples (1 prompt × 2 seeds), each fine-tuned
    # sample ranked against the base weights' one by both judges.
    ScriptedJudges.script["judge-a"] += ["Ranking: 1 > 2"] * 2
    ScriptedJudges.script["judge-b"] += ["Ranking: 2 > 1", "no idea"]
    config = write_config(tmp_path, prompts=3, judges=scripted(judges_endpoint))
    outcome = {}

    def run():
        outcome["result"] = training_round(round_id="human-r1", config=config, store=local_store,
                                           review=ReviewPolicy(mode="ask", poll_interval_s=1))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    answers = [CandidateDecision(action="pick", candidate=2), CandidateDecision(action="reject")]
    answered: set[tuple[str, str | None]] = set()  # (run, paused since): each pause once
    deadline = time.monotonic() + 240
    while answers and time.monotonic() < deadline:
        for review in pending_reviews():
            if review.kind == "pick" and (review.flow_run_id, review.paused_since) not in answered:
                assert "criterion" in review.description and "judge-a" in review.description
                assert "numbered in their corners" in review.description
                answer_review(review.flow_run_id, answers.pop(0))
                answered.add((review.flow_run_id, review.paused_since))
                break
        time.sleep(0.3)
    thread.join(240)
    result = outcome["result"]
    report = result.report
    assert (report.accepted, report.human_picks, report.discards) == (2, 1, 1)
    assert report.escalations == 2 and report.agreement_rate == pytest.approx(1 / 3)
    # Rank-only judges score the base weights 0.5 (no calls) and the fine-tuned samples by
    # preference: per sample the mean of judge A (1) and judge B (0, then no answer: 0.5).
    assert report.held_out_before == 0.5
    assert report.held_out_after_scores == [0.5, 0.75]

    rows = read_dataset(local_store, result.dataset_key)
    assert list(rows["decision"]) == ["accepted", "human"] and list(rows["chosen"]) == [0, 1]
    assert list(rows["judge_b_raw"]) == ["[1, 2]", "Video 2, Video 1"]
    assert list(rows["judge_a_ranking"][1]) == [0, 1] and list(rows["judge_b_ranking"][1]) == [1, 0]
    from agents.judges import CRITERIA

    assert all(rows["criterion"][i] == CRITERIA[rows["criterion_id"][i]] for i in range(2))
    # Each judge request carried C × frames_per_video images and the criterion's text.
    first = [part for message in ScriptedJudges.requests[0]["messages"][1:] for part in message["content"]]
    assert sum(part["type"] == "image_url" for part in first) == 4
    assert any(CRITERIA[rows["criterion_id"][0]] in part.get("text", "") for part in first)


def test_full_round_trains_and_reports(tmp_path, local_store):
    config = write_config(tmp_path)
    result = training_round(round_id="full-r1", config=config, store=local_store, seed=3)
    store = open_store(local_store)
    report = result.report

    # A manifest with media in the store, and a report file.
    rows = read_dataset(local_store, result.dataset_key)
    assert len(rows) == report.accepted == 2  # metric judges + unattended judge_a keep both
    for row in rows.itertuples():
        assert store.exists(row.video_key) and store.exists(row.first_frame_key)
    assert json.loads(store.get_bytes(result.report_key)) == report.model_dump(mode="json")
    assert set(report.stage_seconds) == {"prompts", "sampling", "judging", "decisions",
                                         "finetune", "held_out"}

    # A checkpoint whose weights differ from the base; the modulation embedding moved.
    from agents.finetune import state_from_bytes, weights_from_bytes
    from agents.registry import agents_for
    from configs import load_profile

    weights = weights_from_bytes(store.get_bytes(result.weights_key))
    base = dict(agents_for(load_profile("tiny-wan")).image_to_video.pipe.transformer.named_parameters())
    changed = [name for name, tensor in weights.items() if name.startswith("denoiser/")
               and not np.allclose(tensor.numpy(), base[name[len("denoiser/"):]].detach().numpy())]
    assert changed, "fine-tuning left every weight as it was"
    assert state_from_bytes(store.get_bytes(result.state_key)).step == 4 == result.step
    factors = report.modulation_factors
    assert len(factors) == 4 and factors[-1] != factors[0]
    assert "modulation" in weights and len(report.losses) == 4
    assert store.read_provenance(result.weights_key).params["stage"] == "weights"
    assert isinstance(report.held_out_before, float) and isinstance(report.held_out_after, float)


@pytest.mark.parametrize("modulation", ["random", "off"])
def test_modulation_ablations_run(tmp_path, local_store, modulation):
    config = write_config(tmp_path, prompts=1, finetune={"modulation": modulation})
    result = training_round(round_id=f"ablation-{modulation}", config=config, store=local_store)
    from agents.finetune import weights_from_bytes

    weights = weights_from_bytes(open_store(local_store).get_bytes(result.weights_key))
    assert ("modulation" in weights) == (modulation == "random")
    factors = result.report.modulation_factors
    assert all(f == 0.0 for f in factors) if modulation == "off" else factors[0] != factors[-1]


def test_unattended_discard_rule(tmp_path, local_store, judges_endpoint):
    ScriptedJudges.script = {"judge-a": ["1 > 2"], "judge-b": ["2 > 1"]}
    config = write_config(tmp_path, prompts=1, unattended="discard",
                          judges=scripted(judges_endpoint))
    result = training_round(round_id="discard-r1", config=config, store=local_store)
    assert result.report.discards == 1 and result.report.accepted == 0
    assert len(read_dataset(local_store, result.dataset_key)) == 0
    assert result.weights_key is None and result.report.losses == []


def test_two_rounds_chain_weights_and_plot(tmp_path, local_store):
    config = write_config(tmp_path, prompts=1)
    result = train(rounds=2, config=config, store=local_store, name="chain")
    first, second = result.rounds
    assert second.step == first.step + 4
    assert set(first.report.prompts).isdisjoint(second.report.prompts)
    assert second.report.held_out_before == pytest.approx(first.report.held_out_after)
    store = open_store(local_store)
    assert store.get_bytes(result.plot_key)[:8] == b"\x89PNG\r\n\x1a\n"
    lineage, key = [], second.state_key
    while key.startswith("checkpoints/"):  # round 2's chunks, back to round 1's last state
        lineage.append(key)
        key = store.read_provenance(key).parents[-1]
    assert lineage[2] == first.state_key and len(lineage) == 4


def cache_records_naming(text: str) -> list[str]:
    """Prefect's persisted task results (this session's local result storage, shared with the
    subprocesses the tests start) whose value mentions ``text``: a task that returned it has
    recorded its result, so a rerun is served from the cache. A record is JSON whose "result"
    is the base64 of the pickled value (prefect/serializers.py PickleSerializer)."""
    import base64
    from pathlib import Path

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    found = []
    for path in Path(PREFECT_LOCAL_STORAGE_PATH.value()).glob("*"):
        try:
            record = json.loads(path.read_bytes())
            blob = base64.decodebytes(record["result"].encode())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # being written, or not a result record
        if text.encode() in blob:
            found.append(path.name)
    return found


@pytest.mark.integration
def test_round_killed_with_sigkill_resumes_without_repeating_work(tmp_path, session_server_env):
    config = write_config(tmp_path)
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    reference = training_round(round_id="kill-r1", config=config, store=whole, seed=5)

    script = ("from flows.training import training_round; "
              f"training_round(round_id='kill-r1', config={config!r}, store={killed!r}, seed=5)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=session_server_env)
    store = open_store(killed)
    deadline = time.monotonic() + 300
    # Kill mid-training: once the first fine-tuning chunk's checkpoint is in the store *and*
    # Prefect has recorded that task's result (its cache record names the checkpoint), so the
    # rerun must find the chunk done, on a fast machine or a slow one.
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.isdir(os.path.join(killed, "checkpoints")) and any(
                cache_records_naming(key) for key in store.list("checkpoints/")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the round finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    before = {prefix: store.list(prefix) for prefix in ("video/", "image/", "rounds/", "checkpoints/")}

    resumed = training_round(round_id="kill-r1", config=config, store=killed, seed=5)
    after = {prefix: store.list(prefix) for prefix in before}
    # Nothing finished before the kill was made again: sampling, judging and the dataset add
    # nothing; only the unfinished chunks, the weights, the held-out samples (scored after
    # fine-tuning, tasks/training.py `held_out_score`) and the report are new.
    vanished = set(before["video/"]) - set(after["video/"])
    new_videos = [k for k in after["video/"] if k not in before["video/"]]
    assert not vanished and after["image/"] == before["image/"]
    assert all(store.read_provenance(k).params.get("stage") == "held-out" for k in new_videos)
    assert len(before["checkpoints/"]) >= 1
    assert len(after["checkpoints/"]) == 2 + 1  # two chunks + the exported weights, no repeats
    assert [k for k in after["rounds/"] if k.endswith(".parquet")] == \
        [k for k in before["rounds/"] if k.endswith(".parquet")]

    # …and the manifest is the one an uninterrupted run writes.
    content = ["prompt", "enhanced_prompt", "criterion_id", "judge_a_raw", "judge_b_raw",
               "decision", "chosen", "seed"]
    a = read_dataset(whole, reference.dataset_key)[content]
    b = read_dataset(killed, resumed.dataset_key)[content]
    assert a.equals(b)
    assert resumed.report.losses[-2:] == pytest.approx(reference.report.losses[-2:])


def test_scheduled_round_continues_from_the_newest_round(tmp_path, local_store):
    from flows.training import scheduled_round

    config = write_config(tmp_path, prompts=1)
    manual = training_round(round_id="manual-r1", config=config, store=local_store)
    nightly = scheduled_round(config=config, store=local_store)
    assert nightly.round_id.startswith("sched-") and nightly.step == manual.step + 4
    assert set(nightly.report.prompts).isdisjoint(manual.report.prompts)
    assert nightly.report.held_out_before == pytest.approx(manual.report.held_out_after)


def test_random_selection_control_ignores_the_judges(tmp_path):
    """benchmarks/bench_learning.py's control arm: a seeded random candidate, whatever the vote."""
    from tasks.artifacts import VideoArtifact
    from tasks.candidates import Candidate, CandidateSet, Vote, decide

    from configs import load_training_config

    cfg = load_training_config(write_config(tmp_path, selection="random"))
    video = VideoArtifact(frames_key="v.npz", mp4_key="v.mp4", num_frames=9, height=64,
                          width=64, fps=8.0)
    picks = set()
    for seeds in ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]):
        cset = CandidateSet(prompt_index=0, prompt="p", enhanced_prompt="p", candidates=[
            Candidate(index=i, seed=s, first_frame_key="f.png", video=video)
            for i, s in enumerate(seeds)])
        vote = Vote(criterion_id=1, criterion="c", judgements=[], agreed=0)
        decision = decide.fn(cfg, "store", cset, vote, ReviewPolicy())
        assert decision.outcome == "random" and decision == decide.fn(
            cfg, "store", cset, vote, ReviewPolicy())
        picks.add(decision.chosen)
    assert len(picks) > 1  # not always the judges' (or any fixed) candidate


def test_svd_special_token_without_a_text_tower_is_refused_before_sampling(tmp_path, local_store):
    from configs import PROFILES_DIR
    from configs.errors import MoraError

    profile = yaml.safe_load((PROFILES_DIR / "tiny.yaml").read_text())
    del profile["image_to_video"]["text_tower"]
    profile["name"] = "tiny-no-tower"
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    config = write_config(tmp_path, profile=str(tmp_path / "profile.yaml"))
    with pytest.raises(MoraError, match=r"^profile tiny-no-tower: modulation 'special_token' on "
                                        r"SVD needs the CLIP text tower .*image_to_video\.text_tower"):
        training_round(round_id="no-tower-r1", config=config, store=local_store)
    assert open_store(local_store).list("") == []  # nothing sampled, nothing written
