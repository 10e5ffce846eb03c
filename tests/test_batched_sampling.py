"""Batched candidate sampling: C seeds in one pipeline call give exactly the frames of C calls."""

import numpy as np
import pytest

from agents.base import FinetunedWeights
from agents.registry import agents_for
from configs import load_profile, load_training_config
from storage import open_store
from tasks.artifacts import RunContext, load_frames, load_image
from tasks.candidates import sample_candidates

pytestmark = pytest.mark.usefixtures("tiny_zoo")

SEEDS = [11, 12, 13, 14]


def as_array(frames) -> np.ndarray:
    return np.stack([np.asarray(f) for f in frames])


def calls_of(agent, monkeypatch) -> list[int]:
    """Counts pipeline calls of ``agent`` (batched or not)."""
    calls = []
    for name in ("run", "run_batch"):
        original = getattr(agent, name)

        def spy(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            calls.append(result is not None)
            return result

        monkeypatch.setattr(agent, name, spy)
    return calls


@pytest.mark.parametrize("profile", ["tiny", "tiny-wan"])
def test_batched_frames_equal_one_call_per_seed(profile, monkeypatch):
    agents = agents_for(load_profile(profile))
    prompt = agents.enhancer.enhance("a red fox running through fresh snow")
    t2i, i2v = agents.text_to_image, agents.image_to_video
    images = [t2i(prompt, seed) for seed in SEEDS]
    videos = [i2v(image, prompt, seed) for image, seed in zip(images, SEEDS)]

    t2i_calls, i2v_calls = calls_of(t2i, monkeypatch), calls_of(i2v, monkeypatch)
    batched_images = t2i.batch(prompt, SEEDS)
    batched_videos = i2v.batch(batched_images, prompt, SEEDS)
    assert t2i_calls == [True] and i2v_calls == [True]  # one batched call each
    for one, batched in zip(images, batched_images):
        assert np.array_equal(np.asarray(one), np.asarray(batched))
    for one, batched in zip(videos, batched_videos):
        assert np.array_equal(as_array(one), as_array(batched))
    assert not np.array_equal(as_array(batched_videos[0]), as_array(batched_videos[1]))


@pytest.mark.parametrize("profile", ["tiny", "tiny-wan"])
def test_inexact_batches_are_equal_up_to_rounding(profile):
    """``sampling.exact: false``: the whole batch through the denoiser and VAE at once; each
    video differs from its own call only by float rounding (a few uint8 steps at most)."""
    agents = agents_for(load_profile(profile))
    prompt = agents.enhancer.enhance("a lighthouse in a storm")
    t2i, i2v = agents.text_to_image, agents.image_to_video
    videos = [i2v(t2i(prompt, seed), prompt, seed) for seed in SEEDS]
    fast = i2v.batch(t2i.batch(prompt, SEEDS, exact=False), prompt, SEEDS, exact=False)
    for one, batched in zip(videos, fast):
        diff = np.abs(as_array(one).astype(int) - as_array(batched).astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.05


def test_finetuned_agent_batches_identically():
    """A fine-tuned denoiser with a modulation hook (Wan's 'fill' layout) batches the same too."""
    agents = agents_for(load_profile("tiny-wan"))
    base = agents.image_to_video.pipe
    weights = {f"denoiser/{name}": p.detach().clone() * 1.01
               for name, p in base.transformer.named_parameters()}
    weights["modulation"] = torch_randn(1, base.transformer.config.text_dim)
    agent = agents.image_to_video.with_weights(FinetunedWeights("test-batch", lambda: weights))
    prompt = agents.enhancer.enhance("a tram at night")
    images = agents.text_to_image.batch(prompt, SEEDS[:3])
    one_by_one = [agent(image, prompt, seed) for image, seed in zip(images, SEEDS)]
    batched = agent.batch(images, prompt, SEEDS[:3])
    for one, many in zip(one_by_one, batched):
        assert np.array_equal(as_array(one), as_array(many))
    plain = agents.image_to_video(images[0], prompt, SEEDS[0])
    assert not np.array_equal(as_array(plain), as_array(batched[0]))


def torch_randn(*shape):
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_unbatchable_pipelines_fall_back_to_one_call_per_seed(monkeypatch):
    agents = agents_for(load_profile("tiny"))
    t2i = agents.text_to_image
    monkeypatch.setattr(type(t2i), "batch_plan", lambda self, pipe, count: None)
    calls = calls_of(t2i, monkeypatch)
    prompt = "a lighthouse in a storm"
    images = t2i.batch(prompt, SEEDS[:2])
    assert calls == [False, True, True]  # no plan, then one call per seed
    assert np.array_equal(np.asarray(images[1]), np.asarray(t2i(prompt, SEEDS[1])))


def test_bad_batch_inputs_are_one_line_errors():
    from configs.errors import MoraError

    agents = agents_for(load_profile("tiny"))
    with pytest.raises(MoraError, match="seed must be"):
        agents.text_to_image.batch("ok", [1, -1])
    image = agents.text_to_image("ok", 1)
    with pytest.raises(MoraError, match="2 images for 1 seeds"):
        agents.image_to_video.batch([image, image], "ok", [1])


@pytest.mark.parametrize("sample_batch", [None, 3])
def test_sample_candidates_same_as_one_by_one(sample_batch, tmp_path):
    profile = load_profile("tiny-wan")
    base = load_training_config("tiny")
    store_url = str(tmp_path / "store")
    ctx = RunContext(sop="train", profile="tiny-wan")
    prompt = "a paper boat on a rainy street"

    def sample(batch):
        cfg = base.model_copy(update={"sampling": base.sampling.model_copy(update={"batch": batch})})
        return sample_candidates.fn(profile, cfg, store_url, ctx, 0, prompt, SEEDS, None)

    reference, batched = sample(1), sample(sample_batch)
    store = open_store(store_url)
    assert [c.seed for c in batched.candidates] == SEEDS
    assert [c.index for c in batched.candidates] == [0, 1, 2, 3]
    for one, many in zip(reference.candidates, batched.candidates):
        assert np.array_equal(load_frames(store, one.video.frames_key)[0],
                              load_frames(store, many.video.frames_key)[0])
        assert np.array_equal(np.asarray(load_image(store, one.first_frame_key)),
                              np.asarray(load_image(store, many.first_frame_key)))
        video = store.read_provenance(many.video.frames_key)
        assert video.seed == many.seed and video.params["candidate"] == many.index
        assert store.read_provenance(many.first_frame_key).seed == many.seed
