"""Self-modulated fine-tuning (paper §3.2, Algorithm 1) on the tiny zoo: SD3, SVD and Wan I2V."""

from __future__ import annotations

import copy
import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from agents.finetune import (
    TrainingSample,
    apply_weights,
    finetune,
    inference_weights,
    state_from_bytes,
    state_to_bytes,
    weights_from_bytes,
    weights_to_bytes,
)
from agents.modulation import (
    ModulationEmbedding,
    denoiser_of,
    family_of,
    install,
    installed,
    typical_norm,
    uninstall,
)
from configs.finetune import PAPER_DEFAULTS, TINY_DEFAULTS, FinetuneSpec
from configs.errors import MoraError

torch.set_num_threads(1)

ZOO = {"sd3": "sd3", "svd": "svd", "wan": "wan-i2v"}
TARGET = {"sd3": "text_to_image", "svd": "image_to_video", "wan": "image_to_video"}


def _load(name: str):
    import diffusers
    import transformers
    from diffusers import DiffusionPipeline

    from agents.tiny import ensure_tiny_model

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    pipe = DiffusionPipeline.from_pretrained(ensure_tiny_model(name), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipes():
    """One pipeline per family: the 'cached' ones training reads (and must leave untouched)."""
    return {family: _load(name) for family, name in ZOO.items()}


def _video(seed: int, frames: int = 9, size: int = 64) -> np.ndarray:
    """A coloured square on a tinted background, translated 3 px per frame."""
    rng = np.random.default_rng(seed)
    base = np.full((size, size, 3), 40, np.uint8)
    base[..., 2] = 100
    base[16:40, 12:36] = rng.integers(60, 255, 3)
    return np.stack([np.roll(base, 3 * t, axis=1) for t in range(frames)])


def _samples(family: str, n: int = 2) -> list[TrainingSample]:
    out = []
    for i in range(n):
        video = _video(i)
        target = video[0] if family == "sd3" else video
        out.append(TrainingSample(prompt=f"a red cat walking on the beach {i}",
                                  first_frame=Image.fromarray(video[0]), target=target, fps=8))
    return out


def _spec(family: str, **overrides) -> FinetuneSpec:
    return FinetuneSpec(target=TARGET[family], **{**TINY_DEFAULTS, **overrides})


def _snapshot(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in denoiser_of(pipe).state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(pipes):
    """TINY_DEFAULTS runs per family (the video ones long enough for the loss to fall)."""
    out = {}
    for family, steps, mode in (("wan", 24, "special_token"), ("svd", 24, "random"), ("sd3", 6, "special_token")):
        pipe = pipes[family]
        before = _snapshot(pipe)
        calls = []
        spec = _spec(family, modulation=mode)
        state, losses = finetune(pipe, spec, _samples(family), until_step=steps,
                                 on_step=lambda *a, calls=calls: calls.append(a))
        assert _same(before, _snapshot(pipe)), "finetune modified the pipeline's denoiser"
        out[family] = (spec, state, losses, calls)
    return out


# ------------------------------------------------------------------------------------------
# Settings


def test_paper_defaults_are_the_a9_values():
    assert dict(PAPER_DEFAULTS) == {
        "optimizer": "adamw", "learning_rate": 1e-5, "lr_scheduler": "constant", "warmup_steps": 0,
        "batch_size": 4, "grad_accumulation": 1, "gradient_checkpointing": True, "mixed_precision": "bf16",
        "max_steps": 12, "checkpoint_every": 4, "snr_gamma": 5.0, "ema": True, "ema_start_step": 0,
        "ema_decay": 0.999,
    }
    spec = FinetuneSpec(target="image_to_video")  # the spec's own defaults are the paper's
    assert {k: getattr(spec, k) for k in PAPER_DEFAULTS} == dict(PAPER_DEFAULTS)
    assert FinetuneSpec(target="image_to_video", **PAPER_DEFAULTS) == spec
    assert spec.checkpoints() == [4, 8, 12]
    assert spec.modulation == "special_token" and spec.modulation_tokens == 1
    tiny = FinetuneSpec(target="text_to_image", **TINY_DEFAULTS)
    assert tiny.method == "full" and tiny.mixed_precision == "no" and tiny.checkpoints() == [8, 16, 24]
    with pytest.raises(ValueError):
        FinetuneSpec(target="image_to_video", lerning_rate=1e-4)  # extra="forbid"
    with pytest.raises(ValueError):
        FinetuneSpec(target="image_to_video", special_token="two words")


# ------------------------------------------------------------------------------------------
# The modulation embedding


def test_append_layouts_and_gradients():
    mod = ModulationEmbedding(torch.arange(6, dtype=torch.float32).view(2, 3) + 1, layout="append")
    ehs = torch.randn(3, 5, 3)
    out = mod.append(ehs)
    assert out.shape == (3, 7, 3) and torch.equal(out[:, :5], ehs)
    assert torch.equal(out[1, 5:], mod.weight.detach())
    out.sum().backward()
    assert mod.weight.grad is not None and torch.all(mod.weight.grad == 3)  # one per batch row
    assert mod.factor == pytest.approx(float(torch.arange(1, 7.0).norm()))

    fill = ModulationEmbedding(torch.ones(2, 3), layout="fill")
    padded = torch.zeros(2, 6, 3)
    padded[0, :2] = 5.0  # two real tokens, then zero padding
    padded[1, :] = 7.0  # no padding left: the last K rows are replaced
    out = fill.append(padded)
    assert out.shape == padded.shape
    assert torch.equal(out[0, :2], padded[0, :2]) and torch.equal(out[0, 2:4], torch.ones(2, 3))
    assert torch.equal(out[0, 4:], torch.zeros(2, 3))
    assert torch.equal(out[1, :4], padded[1, :4]) and torch.equal(out[1, 4:], torch.ones(2, 3))


def _reference_token_states(tokenizer, encoder, token: str, k: int, max_length: int, mask: bool):
    """The textbook way: add the token, resize the embeddings, new row = mean row, encode."""
    tokenizer, encoder = copy.deepcopy(tokenizer), copy.deepcopy(encoder)
    n = len(tokenizer)
    tokenizer.add_tokens([token], special_tokens=True)
    encoder.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        table = encoder.get_input_embeddings().weight
        table[n] = table[:n].mean(0)
        batch = tokenizer(token * k, padding="max_length", max_length=max_length, return_tensors="pt")
        hidden = encoder(batch.input_ids, attention_mask=batch.attention_mask if mask else None).last_hidden_state
    at = (batch.input_ids[0] == tokenizer.convert_tokens_to_ids(token)).nonzero().flatten()
    assert len(at) == k  # T5 puts it first, CLIP after its start token
    return hidden[0, at]


@pytest.mark.parametrize("family", ["wan", "sd3"])
def test_special_token_init_is_the_encoders_output(pipes, family):
    pipe = pipes[family]
    tokenizer, encoder = (pipe.tokenizer, pipe.text_encoder) if family == "wan" else \
        (pipe.tokenizer_3, pipe.text_encoder_3)
    vocab, weights = len(tokenizer), {k: v.clone() for k, v in encoder.state_dict().items()}
    mod = ModulationEmbedding.create(pipe, "special_token", tokens=2, special_token="<mora-mod>")
    expected = _reference_token_states(tokenizer, encoder, "<mora-mod>", 2,
                                       512 if family == "wan" else 256, mask=family == "wan")
    assert mod.weight.shape == (2, expected.shape[-1])
    torch.testing.assert_close(mod.weight.detach(), expected, rtol=0, atol=1e-6)
    assert mod.layout == ("fill" if family == "wan" else "append")
    # The shared pipeline's tokenizer and encoder are untouched.
    assert len(tokenizer) == vocab and _same(weights, encoder.state_dict())


def test_svd_special_token_needs_a_matching_text_encoder(pipes):
    with pytest.raises(MoraError, match="use modulation 'random'"):
        ModulationEmbedding.create(pipes["svd"], "special_token")
    # With CLIP's own text tower (its projection lives in the image embedding's space) it works.
    sd3 = pipes["sd3"]
    mod = ModulationEmbedding.create(pipes["svd"], "special_token", clip_text=(sd3.tokenizer, sd3.text_encoder))
    assert mod.weight.shape == (1, pipes["svd"].unet.config.cross_attention_dim)


def _tiny_text_tower():
    """The tiny CLIP text tower the tiny profile pairs with SVD, loaded as a run loads it."""
    from agents.loading import Runtime, load_text_tower
    from configs import load_profile

    return load_text_tower(load_profile("tiny").image_to_video, Runtime.of("cpu", "float32"))


def test_svd_text_tower_is_the_clip_of_its_image_encoder(pipes):
    svd = pipes["svd"]
    tokenizer, tower = _tiny_text_tower()
    assert type(tower).__name__ == "CLIPTextModelWithProjection"
    # The whole CLIP's projection width (its text config, like LAION's, says 512), which is the
    # image encoder's projection and the UNet's cross-attention width.
    width = svd.unet.config.cross_attention_dim
    assert tower.text_projection.out_features == width == svd.image_encoder.config.projection_dim
    assert tower.config.vocab_size == len(tokenizer)
    # Paired: the saved CLIP's vision tower is the SVD image encoder itself.
    from safetensors.torch import load_file

    from agents.tiny import SVD_TEXT_TOWER, tiny_model_dir

    saved = load_file(tiny_model_dir("svd") / SVD_TEXT_TOWER / "model.safetensors")
    image_encoder = svd.image_encoder.state_dict()
    vision = {k: v for k, v in saved.items() if k.startswith(("vision_model.", "visual_projection."))}
    assert vision.keys() == image_encoder.keys() and all(torch.equal(v, image_encoder[k]) for k, v in vision.items())
    assert _tiny_text_tower()[1] is tower  # loaded once per process (the model cache)


def test_text_tower_loads_from_a_text_model_folder_and_refuses_other_models(pipes, tmp_path):
    """A folder holding only a text tower (what `mora models build-random` writes) loads too; a
    model that is not a CLIP is a one-line error."""
    from agents.cache import ModelCache
    from agents.loading import Runtime, load_text_tower
    from configs import load_profile

    sd3 = pipes["sd3"]
    sd3.text_encoder.save_pretrained(tmp_path / "clip-text")
    sd3.tokenizer.save_pretrained(tmp_path / "clip-text")
    sd3.text_encoder_3.save_pretrained(tmp_path / "t5")
    spec = load_profile("tiny").image_to_video
    runtime = Runtime.of("cpu", "float32")
    tokenizer, tower = load_text_tower(spec.model_copy(update={"text_tower": spec.text_tower.model_copy(
        update={"model": str(tmp_path / "clip-text"), "subfolder": None})}), runtime, ModelCache(None))
    assert len(tokenizer) == len(sd3.tokenizer) and _same(tower.state_dict(), sd3.text_encoder.state_dict())
    with pytest.raises(MoraError, match="is a t5 model, not a CLIP one"):
        load_text_tower(spec.model_copy(update={"text_tower": spec.text_tower.model_copy(
            update={"model": str(tmp_path / "t5"), "subfolder": None})}), runtime, ModelCache(None))


def test_svd_special_token_training_starts_from_the_text_towers_encoding(pipes):
    svd = pipes["svd"]
    tokenizer, tower = _tiny_text_tower()
    # The textbook init in CLIP's joint space: the projected hidden state of the added token.
    hidden = _reference_token_states(tokenizer, tower, "<mora-mod>", 1, 77, mask=False)
    with torch.no_grad():
        expected = tower.text_projection(hidden)
    calls = []

    def load():
        calls.append(1)
        return tokenizer, tower

    spec = _spec("svd", modulation="special_token", batch_size=1, max_steps=1, checkpoint_every=1)
    start, _ = finetune(svd, spec, _samples("svd", 1), until_step=0, text_tower=load)
    torch.testing.assert_close(start.tensors["param/modulation"], expected, rtol=0, atol=1e-5)
    state, losses = finetune(svd, spec, _samples("svd", 1), until_step=1, text_tower=load)
    assert len(losses) == 1 and np.isfinite(losses[0]) and len(calls) == 2
    assert not torch.equal(state.tensors["param/modulation"], expected)  # one step moved it
    # A resumed run does not need the tower; random and off never load it.
    finetune(svd, spec, _samples("svd", 1), start=start, until_step=1, text_tower=load)
    finetune(svd, _spec("svd", modulation="random", batch_size=1, max_steps=1, checkpoint_every=1),
             _samples("svd", 1), until_step=1, text_tower=load)
    assert len(calls) == 2


def test_svd_special_token_without_a_text_tower_is_one_line(pipes):
    from agents.loading import Runtime, load_text_tower
    from configs import load_profile

    spec = _spec("svd", modulation="special_token", batch_size=1, max_steps=1, checkpoint_every=1)
    with pytest.raises(MoraError, match="use modulation 'random'") as info:
        finetune(pipes["svd"], spec, _samples("svd", 1), until_step=1)
    assert "\n" not in str(info.value)
    unpaired = load_profile("tiny").image_to_video.model_copy(update={"text_tower": None})
    with pytest.raises(MoraError, match=r"needs the CLIP text tower paired with its image encoder: "
                                        r"name it in the profile \(image_to_video.text_tower") as info:
        finetune(pipes["svd"], spec, _samples("svd", 1), until_step=1,
                 text_tower=lambda: load_text_tower(unpaired, Runtime.of("cpu", "float32")))
    assert "\n" not in str(info.value)


def test_random_init_is_seeded_and_scaled(pipes):
    for family, pipe in pipes.items():
        a = ModulationEmbedding.create(pipe, "random", tokens=3, seed=1)
        b = ModulationEmbedding.create(pipe, "random", tokens=3, seed=1)
        c = ModulationEmbedding.create(pipe, "random", tokens=3, seed=2)
        assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
        norms = a.weight.detach().norm(dim=-1)
        torch.testing.assert_close(norms, torch.full((3,), typical_norm(pipe)), rtol=1e-5, atol=1e-5)
        assert ModulationEmbedding.create(pipe, "off") is None


# ------------------------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("family,mode", [
    ("sd3", "special_token"), ("sd3", "random"), ("sd3", "off"),
    ("wan", "special_token"), ("wan", "random"), ("wan", "off"),
    ("svd", "random"), ("svd", "off"),
])
def test_modes_train_the_modulation(pipes, family, mode):
    pipe = pipes[family]
    spec = _spec(family, modulation=mode, batch_size=1, max_steps=3, checkpoint_every=3)
    calls = []
    state, losses = finetune(pipe, spec, _samples(family, 1), until_step=3, on_step=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3] and [c[1] for c in calls] == losses
    assert all(np.isfinite(losses))
    if mode == "off":
        assert "param/modulation" not in state.tensors and all(c[2] == 0.0 for c in calls)
        assert "modulation" not in inference_weights(state)
        return
    init = ModulationEmbedding.create(pipe, mode, spec.modulation_tokens, spec.special_token, spec.seed)
    trained = state.tensors["param/modulation"]
    assert trained.shape == init.weight.shape
    assert not torch.equal(trained, init.weight.detach().cpu())  # it received gradients and moved
    assert state.tensors["adam/modulation/exp_avg"].abs().sum() > 0
    assert calls[-1][2] == pytest.approx(float(trained.norm()), rel=1e-5)  # the factor, each step
    assert len({c[2] for c in calls}) == 3


@pytest.mark.parametrize("family", ["wan", "svd"])
def test_loss_falls_on_a_repeated_tiny_dataset(trained, family):
    _, _, losses, calls = trained[family]
    assert len(losses) == 24 and len(calls) == 24
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.8 * first, losses


def _sample(pipe, family: str):
    """Two sampling steps at 64×64 with classifier-free guidance, seed 0."""
    kwargs = dict(height=64, width=64, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    first = _samples(family, 1)[0].first_frame
    if family == "sd3":
        return pipe(prompt="a red cat", guidance_scale=3.0, **kwargs).images
    if family == "svd":
        return pipe(first, num_frames=9, min_guidance_scale=2.0, max_guidance_scale=3.0,
                    decode_chunk_size=9, **kwargs).frames
    return pipe(image=first, prompt="a red cat", num_frames=9, guidance_scale=3.0, **kwargs).frames


@pytest.mark.parametrize("family", ["wan", "svd", "sd3"])
def test_apply_weights_changes_sampling_with_cfg(pipes, trained, family):
    spec, state, _, _ = trained[family]
    weights = inference_weights(state)
    base_weights = _snapshot(pipes[family])
    changed = [k for k, v in weights.items() if k.startswith("denoiser/")
               and not torch.equal(v, base_weights[k[len("denoiser/"):]])]
    assert changed, "training changed no weight"
    k = spec.modulation_tokens

    def sample(pipe):
        return _sample(pipe, family)

    fresh = _load(ZOO[family])
    base = np.asarray(sample(fresh), dtype=np.float64)
    apply_weights(fresh, weights)
    denoiser = denoiser_of(fresh)
    assert installed(denoiser) is not None
    seen = []  # what the denoiser receives after the modulation hook, call by call
    spy = denoiser.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    tuned = np.asarray(sample(fresh), dtype=np.float64)
    spy.remove()
    assert np.abs(tuned - base).mean() > 1e-4
    mod = weights["modulation"]
    if family == "wan":  # two calls per step (cond, uncond), both 512 rows, both carrying the modulation
        assert len(seen) == 4 and all(s.shape == (1, 512, mod.shape[1]) for s in seen)
        for s in seen:
            rows = (s[0].abs().sum(-1) != 0).nonzero().flatten()
            torch.testing.assert_close(s[0, rows[-k:]], mod)
    else:  # one batched call per step: [uncond, cond], each with K more tokens at the end
        assert len(seen) == 2 and all(s.shape[0] == 2 for s in seen)
        for s in seen:
            torch.testing.assert_close(s[:, -k:], mod.expand(2, -1, -1))
        base_len = 1 if family == "svd" else 77 + 256
        assert seen[0].shape[1] == base_len + k
    uninstall(denoiser)
    assert installed(denoiser) is None


def test_chunked_training_equals_uninterrupted(pipes):
    pipe = pipes["wan"]
    spec = _spec("wan", modulation="special_token", gradient_checkpointing=True, batch_size=2,
                 grad_accumulation=2, max_steps=8, checkpoint_every=4)
    samples = _samples("wan", 3)
    whole, losses = finetune(pipe, spec, samples, until_step=8)
    half, first = finetune(pipe, spec, samples, until_step=4)
    half = state_from_bytes(state_to_bytes(half))  # as the cached task hands it on
    rest, second = finetune(pipe, spec, samples, start=half, until_step=8)
    assert first + second == losses
    assert rest.step == whole.step == 8 and rest.tensors.keys() == whole.tensors.keys()
    for key in whole.tensors:
        torch.testing.assert_close(rest.tensors[key], whole.tensors[key], rtol=0, atol=1e-6)
    assert {"param/modulation", "ema/modulation", "adam/modulation/exp_avg"} <= set(whole.tensors)
    # Nothing to do when the state is already there; a different run cannot resume it.
    assert finetune(pipe, spec, samples, start=rest, until_step=8) == (rest, [])
    with pytest.raises(MoraError, match="seed"):
        finetune(pipe, spec.model_copy(update={"seed": 9}), samples, start=half, until_step=8)


def test_lora_trains_resumes_and_merges(pipes):
    pipe = pipes["sd3"]
    spec = _spec("sd3", method="lora", lora_rank=4, learning_rate=1e-2, max_steps=4, checkpoint_every=2)
    samples = _samples("sd3")
    whole, _ = finetune(pipe, spec, samples, until_step=4)
    half, _ = finetune(pipe, spec, samples, until_step=2)
    rest, _ = finetune(pipe, spec, samples, start=state_from_bytes(state_to_bytes(half)), until_step=4)
    for key in whole.tensors:
        torch.testing.assert_close(rest.tensors[key], whole.tensors[key], rtol=0, atol=1e-6)
    assert all(".lora_" in k or "modulation" in k for k in whole.tensors)  # no full weights
    weights = inference_weights(whole)
    assert any(k.startswith("lora/") for k in weights) and not any(k.startswith("denoiser/") for k in weights)
    fresh = _load("sd3")
    before = _snapshot(fresh)
    apply_weights(fresh, weights)
    assert not _same(before, _snapshot(fresh))
    with pytest.raises(MoraError, match="already"):
        apply_weights(fresh, weights)


def test_state_is_safetensors_only(pipes, trained, monkeypatch, tmp_path):
    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "save", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "dump", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.chdir(tmp_path)
    spec, state, _, _ = trained["sd3"]
    state, _ = finetune(pipes["sd3"], spec, _samples("sd3"), start=state, until_step=7)
    data = state_to_bytes(state)
    from safetensors.torch import load

    assert load(data).keys() == state.tensors.keys()
    back = state_from_bytes(data)
    assert back.step == 7 and back.meta == state.meta and back.tensors.keys() == state.tensors.keys()
    assert all(torch.equal(back.tensors[k], state.tensors[k]) for k in state.tensors)
    weights = weights_from_bytes(weights_to_bytes(inference_weights(back)))
    fresh = _load("sd3")
    apply_weights(fresh, weights)
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    with pytest.raises(MoraError):
        state_from_bytes(b"\x00" * 16)
    with pytest.raises(MoraError):
        state_from_bytes(weights_to_bytes(weights))


def test_bad_inputs_are_one_line_errors(pipes, trained):
    wan_spec = _spec("wan")
    with pytest.raises(MoraError, match="image-to-video model"):
        finetune(pipes["wan"], _spec("sd3"), _samples("sd3"), until_step=1)
    short = [TrainingSample("a cat", Image.fromarray(_video(0)[0]), _video(0, frames=8))]
    with pytest.raises(MoraError, match="4k\\+1"):
        finetune(pipes["wan"], wan_spec, short, until_step=1)
    with pytest.raises(MoraError, match="at least one"):
        finetune(pipes["wan"], wan_spec, [], until_step=1)
    with pytest.raises(MoraError):
        family_of(object())
    with pytest.raises(MoraError, match="unexpected key"):
        apply_weights(_load("sd3"), {"something": torch.zeros(1)})
    with pytest.raises(MoraError, match="does not fit|do not fit"):
        apply_weights(pipes["sd3"], inference_weights(trained["wan"][1]))


def test_install_is_removable_and_replaces(pipes):
    denoiser = denoiser_of(pipes["svd"])
    before = len(denoiser._forward_pre_hooks)
    one = ModulationEmbedding(torch.ones(1, 32))
    two = ModulationEmbedding(torch.ones(2, 32))
    install(denoiser, one)
    hook = install(denoiser, two)
    assert installed(denoiser) is two and len(denoiser._forward_pre_hooks) == before + 1
    hook.remove()
    uninstall(denoiser)
    assert installed(denoiser) is None and len(denoiser._forward_pre_hooks) == before


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_first_last_frame_wan_and_cpu_bf16():
    """The connector's Wan FLF2V model trains too (last frame = the target's); bf16 autocast on a CPU on request."""
    pipe = _load("wan-flf2v")
    samples = _samples("wan", 1)
    plain = _spec("wan", modulation="random", batch_size=1, max_steps=2, checkpoint_every=2)
    bf16 = plain.model_copy(update={"mixed_precision": "bf16", "mixed_precision_on_cpu": True})
    _, fp32_losses = finetune(pipe, plain, samples, until_step=2)
    state, bf16_losses = finetune(pipe, bf16, samples, until_step=2)
    assert all(np.isfinite(fp32_losses + bf16_losses)) and fp32_losses != bf16_losses
    assert all(v.dtype == torch.float32 for k, v in state.tensors.items() if k.startswith(("param/", "ema/")))


# ------------------------------------------------------------------------------------------
# Several agents trained together (Algorithm 1)

JOINT = {"text_to_image": "sd3", "image_to_video": "wan"}


def _joint_spec(**overrides) -> FinetuneSpec:
    return FinetuneSpec(targets=["image_to_video", "text_to_image"], **{
        **TINY_DEFAULTS, "ema": False, "batch_size": 1, "max_steps": 1, "checkpoint_every": 1,
        **overrides})


def test_one_joint_step_moves_both_agents_and_the_modulation_reaches_both(pipes):
    pair = {target: pipes[family] for target, family in JOINT.items()}
    before = {target: _snapshot(pipe) for target, pipe in pair.items()}
    spec = _joint_spec()
    assert spec.trained == ("text_to_image", "image_to_video")  # chain order
    calls = []
    state, losses = finetune(pair, spec, _samples("wan", 1), until_step=1,
                             on_step=lambda *a: calls.append(a))
    assert len(losses) == 1 and np.isfinite(losses[0])
    factors = json.loads(state.meta["modulation_factors"])
    assert calls[0][2] == pytest.approx(np.hypot(*factors.values()), rel=1e-5)
    for target, family in JOINT.items():
        pipe = pair[target]
        assert _same(before[target], _snapshot(pipe)), "finetune modified a pipeline"
        weights = inference_weights(state, target)
        moved = [k for k, v in weights.items() if k.startswith("denoiser/")
                 and not torch.equal(v, before[target][k[len("denoiser/"):]])]
        assert moved, f"the step left the {target} agent's weights unchanged"
        init = ModulationEmbedding.create(pipe, spec.modulation, spec.modulation_tokens,
                                          spec.special_token, spec.seed)
        mod = weights["modulation"]
        assert mod.shape == init.weight.shape and not torch.equal(mod, init.weight.detach().cpu())
        assert factors[target] == pytest.approx(float(mod.norm()), rel=1e-5)
        # At inference: the agent's own pipeline appends its own modulation to every call.
        fresh = _load(ZOO[family])
        apply_weights(fresh, weights)
        seen = []
        spy = denoiser_of(fresh).register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["encoder_hidden_states"].detach().clone()), with_kwargs=True)
        _sample(fresh, family)
        spy.remove()
        assert seen
        for s in seen:
            rows = (s[-1].abs().sum(-1) != 0).nonzero().flatten()
            torch.testing.assert_close(s[-1, rows[-1:]], mod)
    with pytest.raises(MoraError, match="name one of them"):
        inference_weights(state)


def test_modulation_factor_weights_each_agents_loss_differentiably():
    from agents.finetune import loss_weights, total_loss

    mods = [ModulationEmbedding(torch.full((1, 4), v)) for v in (1.0, 3.0)]
    losses = [torch.tensor(2.0), torch.tensor(1.0)]
    spec = _joint_spec()
    total = total_loss(losses, mods, spec)
    assert float(total.detach()) == pytest.approx(2 * (0.25 * 2.0 + 0.75 * 1.0))
    assert loss_weights([m.factor for m in mods], spec) == pytest.approx([0.5, 1.5])
    total.backward()
    # The agent with the larger loss loses influence: its embedding's norm is pushed down.
    assert float((mods[0].weight.grad * mods[0].weight.detach()).sum()) > 0
    assert float((mods[1].weight.grad * mods[1].weight.detach()).sum()) < 0
    equal = _joint_spec(loss_weighting="equal")  # the ablation: a plain sum, no factor in it
    assert float(total_loss(losses, mods, equal)) == pytest.approx(3.0)
    assert float(total_loss(losses, [None, None], spec)) == pytest.approx(3.0)  # modulation off


def test_joint_spec_is_checked(pipes):
    with pytest.raises(ValueError, match="either target or targets"):
        FinetuneSpec(target="image_to_video", targets=["text_to_image"])
    with pytest.raises(ValueError, match="either target or targets"):
        FinetuneSpec()
    with pytest.raises(ValueError, match="distinct"):
        FinetuneSpec(targets=["text_to_image", "text_to_image"])
    with pytest.raises(MoraError, match="one pipeline per agent"):
        finetune(pipes["wan"], _joint_spec(), _samples("wan", 1), until_step=1)
    with pytest.raises(MoraError, match="not a text-to-image one"):
        finetune({"text_to_image": pipes["wan"], "image_to_video": pipes["wan"]}, _joint_spec(),
                 _samples("wan", 1), until_step=1)
