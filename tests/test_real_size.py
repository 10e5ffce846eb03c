"""What a GPU profile at real size needs, checked on the tiny zoo on a CPU: fine-tuning on the
profile's device whatever the offload, a frozen LoRA base in the profile's dtype, streaming
checkpoints, judges on their spec's device and dtype with labels beside their frames, and the
real-architecture random builds' bookkeeping (the builds themselves are benchmarks, not tests)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

import agents.finetune as ft
import agents.finetune.train as train_loop
from agents.finetune import TrainingSample, finetune, inference_weights
from configs.finetune import TINY_DEFAULTS, FinetuneSpec
from configs.judges import JudgeSpec
from configs.errors import MoraError

torch.set_num_threads(1)


def _load(name: str, dtype=torch.float32):
    import diffusers
    import transformers
    from diffusers import DiffusionPipeline

    from agents.tiny import ensure_tiny_model

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    pipe = DiffusionPipeline.from_pretrained(ensure_tiny_model(name), use_safetensors=True, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _samples(n: int = 1) -> list[TrainingSample]:
    frame = np.full((64, 64, 3), 90, np.uint8)
    frame[16:40, 12:36] = (200, 40, 40)
    return [TrainingSample(prompt=f"a red square {i}", first_frame=Image.fromarray(frame), target=frame)
            for i in range(n)]


def _spec(**overrides) -> FinetuneSpec:
    return FinetuneSpec(target="text_to_image", **{**TINY_DEFAULTS, "batch_size": 1, "max_steps": 2,
                                                   "checkpoint_every": 2, "modulation": "random", **overrides})


@pytest.fixture
def spy(monkeypatch):
    """Records the training copy and the optimizer each finetune() call builds."""
    seen: dict = {}
    copy, adamw = train_loop.training_copy, torch.optim.AdamW

    def training_copy(*args, **kwargs):
        seen["denoiser"] = copy(*args, **kwargs)
        return seen["denoiser"]

    class Recording(adamw):
        def __init__(self, params, *args, **kwargs):
            params = list(params)
            seen["optimizer_params"] = params
            super().__init__(params, *args, **kwargs)

    monkeypatch.setattr(train_loop, "training_copy", training_copy)
    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    return seen


def test_offloaded_profile_trains_on_the_profiles_device(spy):
    """With CUDA absent, model offload is simulated with the accelerator being the CPU: the
    weights sit on the CPU between calls, hooked — their device says nothing about where training
    runs. It runs on the device asked for, on a module without hooks, and the pipeline keeps its
    placement."""
    pipe = _load("sd3")
    pipe.enable_model_cpu_offload(device="cpu")
    state, losses = finetune(pipe, _spec(method="lora", lora_rank=2), _samples(), until_step=1, device="cpu")
    assert len(losses) == 1 and np.isfinite(losses[0])
    assert {p.device for p in spy["optimizer_params"]} == {torch.device("cpu")}
    assert not any(hasattr(m, "_hf_hook") for m in spy["denoiser"].modules())
    assert hasattr(pipe.transformer, "_hf_hook")  # the sampling pipeline stays offloaded


def test_sequentially_offloaded_denoiser_gives_a_real_training_copy():
    """Under sequential offload the denoiser's parameters are ``meta`` placeholders (the values
    live in the hooks): the training copy holds the real values, without hooks."""
    from accelerate import cpu_offload

    transformer = _load("sd3").transformer
    reference = {k: v.clone() for k, v in transformer.state_dict().items()}
    cpu_offload(transformer, execution_device=torch.device("cpu"))
    assert {p.device.type for p in transformer.parameters()} == {"meta"}
    for method in ("full", "lora"):
        copy = train_loop.training_copy(transformer, torch.device("cpu"), _spec(method=method))
        state = copy.state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
        assert not any(hasattr(m, "_hf_hook") for m in copy.modules())


def test_lora_keeps_the_frozen_base_in_the_profiles_dtype(spy):
    pipe = _load("sd3", dtype=torch.bfloat16)
    spec = _spec(method="lora", lora_rank=2, gradient_checkpointing=True, ema=True)
    state, losses = finetune(pipe, spec, _samples(), until_step=2, device="cpu")
    denoiser = spy["denoiser"]
    frozen = [p for n, p in denoiser.named_parameters() if ".lora_" not in n]
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16}
    assert not any(p.requires_grad for p in frozen)
    # Only the adapters and the modulation train, in fp32; optimizer state and EMA are fp32 too.
    assert {p.dtype for p in spy["optimizer_params"]} == {torch.float32}
    assert all(v.dtype == torch.float32 for k, v in state.tensors.items() if k.startswith(("param/", "ema/", "adam/"))
               and not k.endswith("/step"))
    assert denoiser.is_gradient_checkpointing and all(np.isfinite(losses))
    # On the pipeline's own device the frozen weights are its tensors: nothing was copied.
    base = dict(pipe.transformer.named_parameters())
    lora_base = {n.replace(".base_layer", ""): p for n, p in denoiser.named_parameters() if ".lora_" not in n}
    assert all(p.data_ptr() == base[n].data_ptr() for n, p in lora_base.items())


def test_full_finetuning_trains_fp32_copies_and_leaves_the_pipeline(spy):
    pipe = _load("sd3", dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    finetune(pipe, _spec(method="full"), _samples(), until_step=1, device="cpu")
    assert {p.dtype for p in spy["optimizer_params"]} == {torch.float32}
    after = pipe.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_round_trips_without_whole_file_bytes(tmp_path, monkeypatch):
    """The training chunk writes and reads checkpoints as files through the store: the bytes
    helpers, the store's bytes methods and safetensors' in-memory save/load are never used."""
    from safetensors import torch as st

    from storage import open_store
    from tasks.artifacts import RunContext, provenance
    from tasks.training import put_safetensors, read_safetensors

    pipe = _load("sd3")
    state, _ = finetune(pipe, _spec(method="lora", lora_rank=2), _samples(), until_step=1)
    store = open_store(str(tmp_path / "store"))

    def forbidden(*args, **kwargs):
        raise AssertionError("whole-file bytes used")

    for name in ("save", "load"):
        monkeypatch.setattr(st, name, forbidden)
    for name in ("state_to_bytes", "state_from_bytes", "weights_to_bytes", "weights_from_bytes"):
        monkeypatch.setattr(ft, name, forbidden)
    monkeypatch.setattr(type(store), "get_bytes", forbidden)
    monkeypatch.setattr(type(store), "put_bytes", forbidden)
    monkeypatch.setattr("tasks.artifacts._current_flow_run_id", lambda: None)
    ctx = RunContext(sop="train", profile="tiny")
    key = put_safetensors(store, "checkpoints/a.safetensors", lambda p: ft.save_state(state, p),
                          provenance("checkpoint", ctx))
    back = read_safetensors(store, key, ft.load_state)
    assert back.step == state.step and back.meta == state.meta
    assert all(torch.equal(back.tensors[k], state.tensors[k]) for k in state.tensors)
    weights = inference_weights(back)
    key2 = put_safetensors(store, "checkpoints/w.safetensors", lambda p: ft.save_weights(weights, p),
                           provenance("checkpoint", ctx))
    assert read_safetensors(store, key2, ft.load_weights).keys() == weights.keys()
    assert store.read_provenance(key).size == (tmp_path / "store" / key).stat().st_size
    with pytest.raises(MoraError, match="not a Mora fine-tuning state"):
        read_safetensors(store, key2, ft.load_state)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(MoraError):
        ft.load_state(tmp_path / "junk.safetensors")


# --------------------------------------------------------------------------- judges


def test_judge_spec_device_and_dtype_place_the_model():
    from agents.cache import ModelCache
    from agents.judges import make_judge
    from agents.loading import Runtime

    spec = JudgeSpec(name="q", backend="transformers", model="tiny:judge-qwen2-vl", device="cpu",
                     dtype="bfloat16", frames_per_video=1, max_new_tokens=4)
    judge = make_judge(spec, Runtime(device="cpu", dtype="float32"), cache=ModelCache())
    model, _ = judge.loaded()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    video = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert judge.rank([video, video], 8.0, "a cat", 1).backend == "transformers"
    # Without them the judge follows the runtime it is given (the profile's), float16 on a CPU as fp32.
    assert make_judge(spec.model_copy(update={"device": None, "dtype": None}),
                      Runtime(device="cpu", dtype="bfloat16")).runtime.dtype == "bfloat16"
    assert make_judge(spec.model_copy(update={"dtype": "float16"})).runtime.dtype == "float32"
    with pytest.raises(ValueError, match="transformers backend"):
        JudgeSpec(name="m", backend="openai", base_url="http://x", model="m", device="cuda")


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava_onevision"])
def test_each_label_sits_next_to_its_frames(arch):
    """Rendered with each family's chat template, between one video's label and the next video's
    label come exactly that video's frames (LLaVA-OneVision's template puts a message's images
    before its text: each video has a message of its own)."""
    from agents.judges.vision import chat_messages as _messages
    from agents.tiny import build_judge_tokenizer

    tokenizer = build_judge_tokenizer(arch)
    image_token = "<|image_pad|>" if arch == "qwen2_vl" else "<image>"
    spec = JudgeSpec(name="j", backend="transformers", model="x", frames_per_video=3)
    videos = [np.full((5, 16, 16, 3), i * 60, np.uint8) for i in range(3)]
    messages, images = _messages(spec, videos, "a cat", "criterion", lambda im: {"type": "image"})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert len(images) == 9 and text.count(image_token) == 9
    positions = [text.index(f"Video {i}:") for i in (1, 2, 3)]
    # Each video's frames are within its own turn, next to its label, and nowhere else.
    turns = text.split("<|im_start|>")
    for i in (1, 2, 3):
        (turn,) = [t for t in turns if f"Video {i}:" in t]
        assert turn.count(image_token) == 3
    assert positions == sorted(positions)


# --------------------------------------------------------------------------- random real-size builds


def test_build_random_records_sources_and_skips_what_does_not_fit(tmp_path):
    from agents.random_weights import PUBLISHED, build_random_profile, is_random
    from configs import load_profile

    for name in ("sd3-svd", "sdxl-svd", "wan"):
        for role in ("text_to_image", "image_to_image", "image_to_video", "connector"):
            model = getattr(load_profile(name), role).model
            if model in PUBLISHED:
                assert PUBLISHED[model].sources and PUBLISHED[model].components
    path, results = build_random_profile("wan", max_gb=0.001, home=tmp_path)
    assert all(r.folder is None and r.reason.startswith("skipped") for r in results)
    assert "GB" in results[0].reason
    prof = load_profile(str(path))
    assert prof.name == "wan-random" and "random weights" in prof.description
    assert not is_random(prof.image_to_video.model)
    with pytest.raises(MoraError, match="no published architecture"):
        build_random_profile("tiny", home=tmp_path)


def test_published_architectures_have_the_published_sizes():
    """Built on the meta device (no memory): the denoisers have their published parameter counts."""
    from agents.random_weights import build_pipeline

    def billions(model, part):
        return sum(p.numel() for p in getattr(build_pipeline(model, "bfloat16", meta=True), part).parameters()) / 1e9

    assert round(billions("stabilityai/stable-diffusion-3-medium-diffusers", "transformer"), 2) == 2.03
    assert round(billions("stabilityai/stable-video-diffusion-img2vid-xt", "unet"), 3) == 1.525
    assert round(billions("stabilityai/stable-diffusion-xl-base-1.0", "unet"), 2) == 2.57
    assert round(billions("timbrooks/instruct-pix2pix", "unet"), 2) == 0.86


def test_svd_profiles_text_tower_has_its_published_size_and_width(tmp_path):
    """The CLIP text tower SVD's special-token modulation needs is built at real size too: 354 M
    parameters projecting to 1024, the SVD image encoder's projection and its UNet's width."""
    from agents.random_weights import PUBLISHED, build_pipeline, build_random_profile
    from configs import load_profile

    svd = PUBLISHED["stabilityai/stable-video-diffusion-img2vid-xt"].components
    for name in ("sd3-svd", "sdxl-svd"):
        tower = load_profile(name).image_to_video.text_tower.model
        text = build_pipeline(tower, "bfloat16", meta=True).components["text_encoder"]
        assert round(sum(p.numel() for p in text.parameters()) / 1e9, 3) == 0.354
        assert text.text_projection.out_features == svd["image_encoder"]["projection_dim"] == 1024
    path, results = build_random_profile("sd3-svd", max_gb=0.001, home=tmp_path)
    assert tower in [r.model for r in results] and all(r.folder is None for r in results)
    assert load_profile(str(path)).image_to_video.text_tower.model == tower  # skipped: the hub id stays


def test_a_profile_can_load_sd3_without_t5():
    """What the real-size random SD3 needs (built without T5-XXL): `without` loads components as None."""
    from agents.cache import ModelCache
    from agents.loading import Runtime, load_pipeline
    from configs import load_profile

    spec = load_profile("tiny").text_to_image.model_copy(update={"without": ("text_encoder_3", "tokenizer_3")})
    pipe = load_pipeline(spec, Runtime(device="cpu", dtype="float32"), ModelCache())
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None and pipe.text_encoder is not None
    image = pipe("a cat", height=64, width=64, num_inference_steps=1, output_type="pil").images[0]
    assert image.size == (64, 64)


def test_random_weights_are_said_in_provenance_and_on_the_command_line(tmp_path, capsys):
    from agents.image_to_video import ImageToVideoAgent
    from agents.loading import Runtime
    from agents.random_weights import MARKER, is_random
    from configs import load_profile
    from mora import cli_common

    folder = tmp_path / "svd"
    folder.mkdir()
    (folder / MARKER).write_text('{"weights": "random weights"}')
    is_random.cache_clear()
    prof = load_profile("tiny")
    prof = prof.model_copy(update={"image_to_video": prof.image_to_video.model_copy(update={"model": str(folder)})})
    agent = ImageToVideoAgent(prof.image_to_video, Runtime(device="cpu", dtype="float32"))
    assert agent.model_ref["revision"] == "random weights"
    cli_common.check_models(prof, ("text_to_image", "image_to_video"))
    assert "runs on random weights: outputs are noise" in capsys.readouterr().err
