"""The offline tiny model zoo: builds, loads as real checkpoints do, runs at the profile's sizes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from agents.tiny import (
    MARKER,
    TINY_MODELS,
    build_tiny_zoo,
    ensure_tiny_model,
    is_built,
    tiny_model_dir,
)
from configs.errors import MoraError

EXPECTED_CLASSES = {
    "sd3": "StableDiffusion3Pipeline",
    "svd": "StableVideoDiffusionPipeline",
    "wan-i2v": "WanImageToVideoPipeline",
    "wan-flf2v": "WanImageToVideoPipeline",
    "ip2p": "StableDiffusionInstructPix2PixPipeline",
}


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype("uint8"))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core box two threads run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("mora-home")
    build_tiny_zoo(home=home)
    return home


@pytest.fixture(scope="module")
def pipes(zoo_home):
    from diffusers import DiffusionPipeline

    loaded = {}
    for name in TINY_MODELS:
        pipe = DiffusionPipeline.from_pretrained(tiny_model_dir(name, zoo_home))
        pipe.set_progress_bar_config(disable=True)
        loaded[name] = pipe
    return loaded


def _twice(fn):
    """Call a seeded pipeline twice; the outputs must be identical."""
    a, b = fn(), fn()
    assert np.array_equal(a, b)
    assert np.isfinite(a).all()
    return a


# ------------------------------------------------------------------ names and folders


def test_public_names_and_dir(tmp_path, monkeypatch):
    assert TINY_MODELS == ("sd3", "svd", "wan-i2v", "wan-flf2v", "ip2p")
    assert tiny_model_dir("svd", tmp_path) == tmp_path / "tiny" / "svd"
    monkeypatch.setenv("MORA_HOME", str(tmp_path / "elsewhere"))
    assert tiny_model_dir("sd3") == tmp_path / "elsewhere" / "tiny" / "sd3"


def test_unknown_name_raises(tmp_path):
    with pytest.raises(MoraError, match=r"unknown tiny model 'nope' \(known: sd3, svd, wan-i2v, wan-flf2v, ip2p\)"):
        tiny_model_dir("nope", tmp_path)
    with pytest.raises(MoraError, match="unknown tiny model"):
        ensure_tiny_model("sdxl", tmp_path)
    assert not (tmp_path / "tiny" / "sdxl").exists()


# ------------------------------------------------------------------ the built zoo


def test_zoo_folders_load_as_expected_classes(zoo_home, pipes):
    for name in TINY_MODELS:
        folder = tiny_model_dir(name, zoo_home)
        assert is_built(name, zoo_home)
        assert (folder / "model_index.json").is_file()
        assert (folder / MARKER).is_file()
        assert type(pipes[name]).__name__ == EXPECTED_CLASSES[name]
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert size < 8_000_000, (name, size)
        for p in folder.rglob("*"):
            mode = p.stat().st_mode & 0o777
            assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
    # nothing half-built left behind
    assert not [p for p in (zoo_home / "tiny").iterdir() if ".build-" in p.name or ".old-" in p.name]


def test_tokenizers_handle_any_prompt_and_truncate(pipes):
    sd3 = pipes["sd3"]
    long_prompt = "a cinematic photo of a golden dragon flying over snowy mountains at sunset, " * 30
    for tok in (sd3.tokenizer, sd3.tokenizer_2, pipes["ip2p"].tokenizer):
        assert tok.model_max_length == 77
        assert tok.bos_token_id == len(tok) - 2 and tok.eos_token_id == len(tok) - 1
        for prompt in ("A cat, walking!", "", "   ", "日本語 🐱 émigré", long_prompt):
            ids = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
            assert len(ids) == 77 and ids[0] == tok.bos_token_id and tok.eos_token_id in ids
            assert max(ids) < len(tok)
        ids = tok(long_prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert ids[-1] == tok.eos_token_id
    # CLIP text configs carry the ids of the tokenizer that was built with them
    for enc, tok in ((sd3.text_encoder, sd3.tokenizer), (pipes["ip2p"].text_encoder, pipes["ip2p"].tokenizer)):
        assert enc.config.vocab_size == len(tok)
        assert (enc.config.bos_token_id, enc.config.eos_token_id) == (tok.bos_token_id, tok.eos_token_id)
    for tok in (sd3.tokenizer_3, pipes["wan-i2v"].tokenizer):
        assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
        for prompt in ("A cat, walking!", "", "日本語 🐱 émigré", long_prompt):
            ids = tok(prompt, padding="max_length", max_length=64, truncation=True).input_ids
            assert len(ids) == 64 and 1 in ids and max(ids) < len(tok)


# ------------------------------------------------------------------ outputs at the profile's sizes


def test_sd3_text_to_image_and_img2img_from_same_folder(zoo_home, pipes):
    from diffusers import StableDiffusion3Img2ImgPipeline

    pipe = pipes["sd3"]
    out = _twice(
        lambda: pipe(
            "a red fox in the snow", height=64, width=64, num_inference_steps=2, generator=_gen(), output_type="np"
        ).images
    )
    assert out.shape == (1, 64, 64, 3)
    pil = pipe("a fox", height=64, width=64, num_inference_steps=2, generator=_gen(), output_type="pil").images[0]
    assert pil.size == (64, 64)

    img2img = StableDiffusion3Img2ImgPipeline.from_pretrained(tiny_model_dir("sd3", zoo_home))
    img2img.set_progress_bar_config(disable=True)
    edited = _twice(
        lambda: img2img(
            "make it blue", image=_image(0), strength=0.6, num_inference_steps=2, generator=_gen(), output_type="np"
        ).images
    )
    assert edited.shape == (1, 64, 64, 3)


@pytest.mark.parametrize("num_frames", [9, 8])
def test_svd_frames(pipes, num_frames):
    pipe = pipes["svd"]
    frames = _twice(
        lambda: pipe(
            _image(1),
            height=64,
            width=64,
            num_frames=num_frames,
            num_inference_steps=2,
            generator=_gen(),
            output_type="np",
        ).frames
    )
    assert frames.shape == (1, num_frames, 64, 64, 3)


def test_wan_image_to_video(pipes):
    pipe = pipes["wan-i2v"]
    kwargs = dict(image=_image(2), prompt="a cat walking on the beach", height=64, width=64, num_frames=9)
    frames = _twice(lambda: pipe(**kwargs, num_inference_steps=2, generator=_gen(), output_type="np").frames)
    assert frames.shape == (1, 9, 64, 64, 3)
    pil = pipe(**kwargs, num_inference_steps=2, generator=_gen(), output_type="pil").frames[0]
    assert len(pil) == 9 and all(f.size == (64, 64) for f in pil)


def test_wan_first_last_frame(pipes):
    pipe = pipes["wan-flf2v"]
    first, last = _image(3), _image(4)
    frames = _twice(
        lambda: pipe(
            image=first,
            last_image=last,
            prompt="a smooth transition",
            height=64,
            width=64,
            num_frames=9,
            num_inference_steps=2,
            generator=_gen(),
            output_type="np",
        ).frames
    )
    assert frames.shape == (1, 9, 64, 64, 3)
    # as with the real checkpoints, a first-last-frame model is not a single-image model (and vice versa)
    assert pipe.transformer.config.pos_embed_seq_len is not None
    assert pipes["wan-i2v"].transformer.config.pos_embed_seq_len is None
    with pytest.raises(RuntimeError):
        pipe(image=first, prompt="x", height=64, width=64, num_frames=9, num_inference_steps=1, generator=_gen())


def test_instruct_pix2pix(pipes):
    pipe = pipes["ip2p"]
    out = _twice(
        lambda: pipe("make it snow", image=_image(5), num_inference_steps=2, generator=_gen(), output_type="np").images
    )
    assert out.shape == (1, 64, 64, 3)
    assert pipe.safety_checker is None and pipe.feature_extractor is None


# ------------------------------------------------------------------ build properties


def test_build_is_deterministic_across_homes(zoo_home, tmp_path):
    other = build_tiny_zoo(home=tmp_path)
    for name in TINY_MODELS:
        a = _file_hashes(tiny_model_dir(name, zoo_home))
        b = _file_hashes(other[name])
        assert any(k.endswith(".safetensors") for k in a)
        assert a == b, name
    # a forced rebuild replaces the folder with the same bytes
    inode_before = tiny_model_dir("ip2p", tmp_path).stat().st_ino
    rebuilt = build_tiny_zoo(home=tmp_path, force=True)
    assert rebuilt["ip2p"].stat().st_ino != inode_before  # a new folder was renamed into place
    assert _file_hashes(rebuilt["ip2p"]) == _file_hashes(tiny_model_dir("ip2p", zoo_home))


def test_ensure_is_idempotent(zoo_home):
    folder = tiny_model_dir("wan-i2v", zoo_home)
    marker = folder / MARKER
    stamps = (folder.stat().st_mtime_ns, folder.stat().st_ino, marker.stat().st_mtime_ns, marker.stat().st_ino)
    assert ensure_tiny_model("wan-i2v", zoo_home) == folder
    assert build_tiny_zoo(home=zoo_home)["wan-i2v"] == folder
    after = (folder.stat().st_mtime_ns, folder.stat().st_ino, marker.stat().st_mtime_ns, marker.stat().st_ino)
    assert after == stamps


def test_half_built_folder_is_rebuilt(zoo_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MORA_HOME", str(tmp_path))
    folder = tiny_model_dir("wan-flf2v")
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")  # no marker: not built
    stale = tmp_path / "tiny" / ".wan-flf2v.build-dead"
    stale.mkdir()
    assert not is_built("wan-flf2v")
    assert ensure_tiny_model("wan-flf2v") == folder
    assert is_built("wan-flf2v") and not stale.exists()
    assert _file_hashes(folder) == _file_hashes(tiny_model_dir("wan-flf2v", zoo_home))


@pytest.mark.integration
def test_two_processes_racing_end_with_one_valid_folder(zoo_home, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=ensure_tiny_model, args=("wan-flf2v", tmp_path)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    root = tmp_path / "tiny"
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == ["wan-flf2v"]
    assert is_built("wan-flf2v", tmp_path)
    assert _file_hashes(root / "wan-flf2v") == _file_hashes(tiny_model_dir("wan-flf2v", zoo_home))

    from diffusers import DiffusionPipeline, WanImageToVideoPipeline

    assert isinstance(DiffusionPipeline.from_pretrained(root / "wan-flf2v"), WanImageToVideoPipeline)



@pytest.mark.integration
def test_trained_tokenizers_are_the_same_in_every_process():
    """tokenizers' BpeTrainer numbers symbols it meets in hash order unless they are fixed up front
    (agents/tiny/vocab.py): two fresh processes must learn the same vocab and merges."""
    import subprocess
    import sys

    from agents.tiny.vocab import CLIP_BOS, CLIP_EOS, clip_vocab_and_merges

    code = ("import hashlib; from agents.tiny.vocab import byte_bpe_vocab_and_merges, clip_vocab_and_merges; "
            "print(hashlib.sha256(repr((clip_vocab_and_merges(), "
            "byte_bpe_vocab_and_merges(('Ranking',), 50))).encode()).hexdigest())")
    root = Path(__file__).resolve().parent.parent
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    digests = {run.communicate(timeout=120)[0].strip() for run in runs}
    assert len(digests) == 1 and all(runs[i].returncode == 0 for i in range(2))
    vocab, merges = clip_vocab_and_merges()
    assert len(merges) == 486 and vocab[CLIP_EOS] == len(vocab) - 1 and vocab[CLIP_BOS] == len(vocab) - 2
