"""Model residency: shared components, the memory budget (LRU eviction), fine-tuned copies."""

import logging

import numpy as np
import pytest

from agents.base import FinetunedWeights
from agents.cache import ModelCache
from agents.image_to_image import ImageToImageAgent
from agents.image_to_video import ImageToVideoAgent
from agents.loading import Runtime
from agents.text_to_image import TextToImageAgent
from configs import load_profile
from configs.errors import MoraError

pytestmark = pytest.mark.usefixtures("tiny_zoo")
RUNTIME = Runtime(device="cpu", dtype="float32")


@pytest.fixture
def tiny():
    return load_profile("tiny")


def test_agents_of_one_model_share_its_components(tiny):
    cache = ModelCache(budget_bytes=None)
    t2i = TextToImageAgent(tiny.text_to_image, RUNTIME, cache)  # StableDiffusion3Pipeline
    edit = ImageToImageAgent(tiny.image_to_image, RUNTIME, cache)  # ...Img2ImgPipeline, same model
    a, b = t2i.pipe, edit.pipe
    assert type(a).__name__ == "StableDiffusion3Pipeline"
    assert type(b).__name__ == "StableDiffusion3Img2ImgPipeline"
    for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer",
                 "tokenizer"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.scheduler is not b.scheduler  # schedulers keep per-call state
    assert (cache.stats.loads, cache.stats.shared) == (1, 1)
    edited = edit(t2i("a fox", seed=1), "make it night", seed=2)
    assert edited.size == (64, 64) and cache.stats.loads == 1


def test_lru_entry_is_evicted_under_the_budget_and_reloaded(tiny, caplog):
    sizes = ModelCache(budget_bytes=None)
    TextToImageAgent(tiny.text_to_image, RUNTIME, sizes).pipe
    ImageToVideoAgent(tiny.image_to_video, RUNTIME, sizes).pipe
    sd3, svd = (sizes.nbytes(k) for k in sizes.keys())
    assert sd3 > 0 and svd > 0 and sizes.total_bytes() == sd3 + svd

    cache = ModelCache(budget_bytes=sd3 + svd - 1)  # room for either, not both
    t2i = TextToImageAgent(tiny.text_to_image, RUNTIME, cache)
    i2v = ImageToVideoAgent(tiny.image_to_video, RUNTIME, cache)
    t2i.pipe
    i2v.pipe  # sd3 is the least recently used: evicted
    assert (cache.stats.loads, cache.stats.evictions) == (2, 1)
    assert [k[1] for k in cache.keys()] == [sizes.keys()[1][1]]
    image = t2i("a fox", seed=3)  # loaded again, svd evicted
    assert (cache.stats.loads, cache.stats.evictions) == (3, 2)
    assert cache.total_bytes() == sd3
    assert np.array_equal(np.asarray(image), np.asarray(TextToImageAgent(
        tiny.text_to_image, RUNTIME, sizes)("a fox", seed=3)))

    small = ModelCache(budget_bytes=1)
    with caplog.at_level(logging.WARNING, logger="mora.cache"):
        TextToImageAgent(tiny.text_to_image, RUNTIME, small).pipe
    assert small.keys() and "more than the" in caplog.text  # loaded anyway, with a warning


def test_finetuned_pipeline_copies_only_the_denoiser(tiny):
    cache = ModelCache(budget_bytes=None)
    agent = ImageToVideoAgent(tiny.image_to_video, RUNTIME, cache)
    base = agent.pipe
    before = cache.total_bytes()
    weights = {f"denoiser/{n}": p.detach().clone() * 1.01 for n, p in base.unet.named_parameters()}
    tuned = agent.with_weights(FinetunedWeights("ckpt-1", lambda: weights))
    pipe = tuned.pipe
    assert pipe.vae is base.vae and pipe.image_encoder is base.image_encoder
    assert pipe.unet is not base.unet
    unet_bytes = sum(p.numel() * p.element_size() for p in base.unet.parameters())
    assert cache.total_bytes() - before == pytest.approx(unet_bytes, rel=0.05)
    image = TextToImageAgent(tiny.text_to_image, RUNTIME, cache)("a fox", seed=1)
    assert not np.array_equal(np.stack(tuned(image, None, 2)), np.stack(agent(image, None, 2)))
    name, param = next(iter(base.unet.named_parameters()))
    assert not np.allclose(param.detach().numpy(), pipe.unet.get_parameter(name).detach().numpy())
    loads = cache.stats.loads
    assert tuned.with_weights(tuned.weights).pipe is pipe and cache.stats.loads == loads


def test_budget_setting(monkeypatch):
    from configs.settings import model_budget_bytes

    monkeypatch.delenv("MORA_MODEL_BUDGET_GB", raising=False)
    assert model_budget_bytes() is None
    monkeypatch.setenv("MORA_MODEL_BUDGET_GB", "1.5")
    assert model_budget_bytes() == int(1.5 * 1024**3) == ModelCache().budget_bytes
    monkeypatch.setenv("MORA_MODEL_BUDGET_GB", "lots")
    with pytest.raises(MoraError, match="MORA_MODEL_BUDGET_GB must be a positive number"):
        model_budget_bytes()


@pytest.mark.usefixtures("prefect_server")
def test_second_sop_run_in_the_process_loads_nothing(local_store):
    from agents.cache import MODEL_CACHE
    from flows.text_to_video import text_to_video

    text_to_video(prompt="a red fox in the snow", segments=2, store=local_store, seed=1)
    loads = MODEL_CACHE.stats.loads
    text_to_video(prompt="a heron over a lake", segments=2, store=local_store, seed=2)
    assert MODEL_CACHE.stats.loads == loads
