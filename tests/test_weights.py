"""Trained weights wherever a profile is named: a round's checkpoint sampled by the SOPs and by
`mora eval --weights`, named in provenance, listed by `mora models list`; foreign or missing
checkpoints refused before any generation. Also the held-out score's interval."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from flows.training import training_round
from configs.errors import MoraError
from storage import open_store
from tasks.artifacts import load_frames
from tests.mora_cli import run_cli
from tests.test_training import write_config

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_zoo")


def mora(*argv: str) -> tuple[int, str, str]:
    """``mora ARGV`` in this process, against the session's Prefect server."""
    return run_cli(list(argv), session_server=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny round (tiny-wan's image-to-video fine-tuned) in a store of its own."""
    folder = tmp_path_factory.mktemp("weights")
    config = write_config(folder, prompts=1)
    store = str(folder / "store")
    result = training_round(round_id="w-r1", config=config, store=store, seed=3)
    assert result.weights_key is not None
    return store, config, result


def test_trained_round_samples_in_t2v_and_eval_and_names_its_checkpoint(trained):
    store_url, config, result = trained
    store = open_store(store_url)
    common = ["--profile", "tiny-wan", "--store", store_url, "--seed", "5"]
    code, base_out, err = mora("t2v", "a red fox running through snow", *common)
    assert code == 0, err
    code, tuned_out, err = mora("t2v", "a red fox running through snow", *common,
                                "--weights", "round:w-r1")
    assert code == 0, err
    base_key = re.search(r"store key: (\S+)", base_out).group(1)
    tuned_key = re.search(r"store key: (\S+)", tuned_out).group(1)
    base_frames = load_frames(store, base_key.removesuffix(".mp4") + ".npz")[0]
    tuned_frames = load_frames(store, tuned_key.removesuffix(".mp4") + ".npz")[0]
    assert base_frames.shape == tuned_frames.shape
    assert not np.array_equal(base_frames, tuned_frames), "the checkpoint changed nothing"

    # Every artifact of the run names the checkpoint; the clip's model ref says fine-tuned.
    checkpoint = f"store://{result.weights_key}"
    final = store.read_provenance(tuned_key)
    assert final.params["weights"] == [checkpoint]
    clip = store.read_provenance(final.parents[0])
    assert clip.params["weights"] == [checkpoint]
    assert any(m.revision and result.weights_key in m.revision for m in clip.models)
    assert "weights" not in store.read_provenance(base_key).params

    # `mora eval --weights`: held-out samples made with the checkpoint, scored, named.
    code, out, err = mora("eval", "--weights", "round:w-r1", "--config", config,
                          "--store", store_url, "--seeds", "2", "--format", "json")
    assert code == 0, err
    assert re.search(r"held-out score of round:w-r1 .*: [01]\.\d{4} \(95% CI", err), err
    import json

    records = json.loads(out)
    assert {r["video"] for r in records} == {"held-out/1", "held-out/2"}
    samples = [k for k in store.list("video/") if k.endswith(".npz")
               and store.read_provenance(k).params.get("stage") == "held-out"
               and store.read_provenance(k).sop == "evaluate-weights"]
    assert samples and all(store.read_provenance(k).params["weights"] == [checkpoint]
                           for k in samples)


def test_foreign_and_missing_checkpoints_are_one_line_errors(trained):
    store_url, _, result = trained
    # tiny's image-to-video is SVD; the round trained tiny-wan's Wan model.
    code, out, err = mora("t2v", "a cat", "--profile", "tiny", "--store", store_url,
                          "--weights", "latest")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: checkpoint store://{result.weights_key} holds weights of tiny:wan-i2v "
        f"(image-to-video), but profile 'tiny' loads tiny:svd there: another model's weights"]
    with pytest.raises(MoraError, match="another model's weights"):
        from flows.text_to_video import text_to_video

        text_to_video(prompt="a cat", profile="tiny", store=store_url, weights="latest")
    code, _, err = mora("i2v", "missing.png", "--profile", "tiny-wan", "--store", store_url,
                        "--weights", f"store://{result.state_key}")
    assert code == 2 and "is a training state, not the weights sampling loads" in err


def test_models_list_shows_the_store_checkpoints(trained):
    store_url, _, result = trained
    code, out, err = mora("models", "list", "--store", store_url)
    assert code == 0, err
    assert "round:w-r1" in out and "tiny:wan-i2v" in out
    from tasks.weights import list_checkpoints

    (ckpt,) = list_checkpoints(store_url)
    assert (ckpt.key, ckpt.round_id, ckpt.target, ckpt.step) == (
        result.weights_key, "w-r1", "image_to_video", 4)
    assert ckpt.loss == pytest.approx(result.report.losses[-1])
    assert ckpt.held_out == pytest.approx(result.report.held_out_after)


def test_profile_field_names_the_weights(trained, tmp_path):
    import yaml

    from configs import PROFILES_DIR, load_profile
    from tasks.weights import apply_weights

    store_url, _, result = trained
    data = yaml.safe_load((PROFILES_DIR / "tiny-wan.yaml").read_text())
    data["image_to_video"]["finetuned"] = "round:w-r1"
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(data))
    profile, keys = apply_weights(load_profile(str(path)), store_url)
    assert keys == (result.weights_key,)
    assert profile.image_to_video.finetuned == f"store://{result.weights_key}"
    assert apply_weights(profile, store_url, "base")[1] == ()  # --weights base overrides it


def test_held_out_report_has_intervals(trained):
    _, _, result = trained
    report = result.report
    low, high = report.held_out_after_ci
    assert low <= report.held_out_after <= high
    assert len(report.held_out_after_scores) == 2  # 1 prompt × 2 seeds
    assert len(report.held_out_judges) == 2  # the config's own judges


def test_bootstrap_mean_interval():
    from metrics.stats import bootstrap_mean

    mean, low, high = bootstrap_mean([0.1, 0.2, 0.3, 0.4, 0.5])
    assert mean == pytest.approx(0.3) and low < mean < high
    assert bootstrap_mean([0.5]) == (0.5, None, None)
    assert bootstrap_mean([0.2, 0.2]) == (0.2, 0.2, 0.2)


def test_agents_trained_together_each_sample_with_their_own_weights(tmp_path):
    """A round training text-to-image and image-to-video together exports one weights file per
    agent; `round:<id>` (or either file's key) gives each to its own agent, modulation included."""
    from agents.finetune import load_weights
    from agents.modulation import denoiser_of, installed
    from configs import load_profile
    from tasks.artifacts import read_safetensors
    from tasks.weights import agents_with_weights, apply_weights

    config = write_config(tmp_path, prompts=1, finetune={
        "target": None, "targets": ["text_to_image", "image_to_video"], "max_steps": 2})
    store_url = str(tmp_path / "store")
    result = training_round(round_id="j-r1", config=config, store=store_url, seed=3)
    keys = result.report.weights_keys
    assert result.weights_key == keys[0] and len(keys) == 2
    store = open_store(store_url)
    by_target = {store.read_provenance(k).params["target"]: k for k in keys}
    assert set(by_target) == {"text_to_image", "image_to_video"}
    for ref in ("round:j-r1", f"store://{by_target['text_to_image']}"):
        profile, used = apply_weights(load_profile("tiny-wan"), store_url, ref)
        assert set(used) == set(keys)
        for target, key in by_target.items():
            assert getattr(profile, target).finetuned == f"store://{key}"
    agents = agents_with_weights(profile, store_url)
    for target, key in by_target.items():  # each pipeline appends its own agent's modulation
        agent = getattr(agents, target)
        assert key in agent.model_ref["revision"]
        mod = read_safetensors(store, key, load_weights)["modulation"]
        torch.testing.assert_close(installed(denoiser_of(agent.pipe)).weight.cpu(), mod)
