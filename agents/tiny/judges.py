"""Tiny random Qwen2-VL and LLaVA-OneVision judges, built offline like the tiny zoo (agents/tiny/zoo.py).

Each is a real ``Qwen2VLForConditionalGeneration`` / ``LlavaOnevisionForConditionalGeneration``
with a few thousand random parameters (seeded), a byte-level BPE tokenizer trained with the
``tokenizers`` library (agents/tiny/vocab.py; Qwen2 style: ``<|im_start|>``/``<|im_end|>`` chat tokens plus the model's
image/video tokens) and a chat template shaped like the real checkpoint's, and a PIL image
processor.  Everything is saved with ``save_pretrained`` under ``<MORA_HOME>/tiny/<name>`` and
loaded with ``from_pretrained`` exactly as a real checkpoint (agents/judges/local_vision.py).  Their
answers are gibberish: they exist to run the transformers judge's code path on a CPU.

The processor is saved without a video processor (building one needs torchvision, and judges
pass frames as images): it is saved and loaded with the image-only processor class of
agents/judges/architectures.py, which also names each architecture's model class and tiny folder.

Building and caching go through agents/tiny/built.py, as for the tiny zoo.
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.judges.architectures import MODEL_CLASSES, PROCESSOR_CLASSES, TINY_JUDGES, image_only_processor_class
from agents.tiny import built
from configs.errors import MoraError

# 2: the tokenizer's merges are learnt by the tokenizers library's BpeTrainer (agents/tiny/vocab.py).
JUDGE_ZOO_VERSION = 2

# Chat specials shared by both (Qwen2 LM family), then each model's vision tokens.
_CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VISION_SPECIALS = {
    "qwen2_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "llava_onevision": ["<image>", "<video>"],
}

# Qwen2-VL's template (one <|vision_start|><|image_pad|><|vision_end|> per image, in place).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-OneVision's (llava-hf) layout: a message's images first, then its videos, then its texts.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CHAT_TEMPLATES = {"qwen2_vl": QWEN2_VL_CHAT_TEMPLATE, "llava_onevision": LLAVA_ONEVISION_CHAT_TEMPLATE}

# Sizes. Text: hidden 32, 4 heads -> head dim 8; Qwen2-VL's mrope_section sums to head_dim / 2.
_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096)
_MROPE_SECTION = [2, 1, 1]
# Qwen2-VL images: 14 px patches, 2x2 merge -> 28 px per token; 56^2..112^2 px -> 4..16 tokens.
_QWEN_MIN_PIXELS = 56 * 56
_QWEN_MAX_PIXELS = 112 * 112
# LLaVA-OneVision: SigLIP at 32 px, 8 px patches -> 16 tokens per image (+1 newline, multi-image).
_LLAVA_IMAGE = 32
_LLAVA_PATCH = 8
_LLAVA_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]

_BPE_MERGES = 300
_EXTRA_WORDS = "Ranking ranking Video video best worst better than rank answer frames criterion"


def _check_arch(arch: str) -> None:
    if arch not in TINY_JUDGES:
        raise MoraError(f"unknown tiny judge {arch!r} (known: {', '.join(TINY_JUDGES)})")


def tiny_judge_dir(arch: str, home: Path | None = None) -> Path:
    """``<home>/tiny/judge-<arch>`` (home defaults to ``configs.settings.mora_home()``); does not build."""
    _check_arch(arch)
    return built.zoo_root(home) / TINY_JUDGES[arch]


def is_judge_built(arch: str, home: Path | None = None) -> bool:
    return built.is_built(tiny_judge_dir(arch, home), JUDGE_ZOO_VERSION)


def ensure_tiny_judge(arch: str, home: Path | None = None) -> Path:
    """Build the tiny ``arch`` judge if missing (or from an older version); return its folder.

    Idempotent; safe when processes race (agents/tiny/built.py).
    """
    folder = tiny_judge_dir(arch, home)
    marker = {"name": TINY_JUDGES[arch], "arch": arch, "model_class": MODEL_CLASSES[arch],
              "seed": built.SEED, "zoo_version": JUDGE_ZOO_VERSION}
    return built.ensure_built(folder, marker, lambda tmp: _save(arch, tmp))


def _save(arch: str, folder: Path) -> None:
    model, processor = build_tiny_judge(arch)
    with built.quiet_progress_bars():
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
    # Saved by the image-only subclass: record the real processor class, as a checkpoint does.
    for path in [folder / "processor_config.json", folder / "tokenizer_config.json"]:
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if "processor_class" in data:
            data["processor_class"] = PROCESSOR_CLASSES[arch]
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# Builders (heavy imports inside).


def build_judge_tokenizer(arch: str):
    """A ``Qwen2Tokenizer`` (tokenizers backend) with chat and vision specials and the chat template."""
    from transformers import Qwen2Tokenizer

    from agents.tiny.vocab import byte_bpe_vocab_and_merges

    _check_arch(arch)
    pairs, merges = byte_bpe_vocab_and_merges(tuple(_EXTRA_WORDS.split()), _BPE_MERGES)
    vocab = dict(pairs)
    specials = _CHAT_SPECIALS + _VISION_SPECIALS[arch]
    for tok in specials:
        vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=specials[1:],
        model_max_length=32768,
    )
    tokenizer.chat_template = _CHAT_TEMPLATES[arch]
    return tokenizer


def build_tiny_judge(arch: str):
    """A freshly initialised (unsaved) ``(model, processor)`` for ``arch``; deterministic."""
    _check_arch(arch)
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):
            return (_build_qwen2_vl() if arch == "qwen2_vl" else _build_llava_onevision())
    finally:
        torch.set_default_dtype(previous)


def _build_qwen2_vl():
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_judge_tokenizer("qwen2_vl")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _CHAT_SPECIALS + _VISION_SPECIALS["qwen2_vl"]}
    head_dim = _TEXT["hidden_size"] // _TEXT["num_attention_heads"]
    assert sum(_MROPE_SECTION) * 2 == head_dim, "mrope_section must sum to half the head dim"
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), **_TEXT,
            rope_parameters={"rope_type": "default", "mrope_section": list(_MROPE_SECTION), "rope_theta": 10000.0},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=_TEXT["hidden_size"], num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(built.SEED)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _greedy_generation_config(model, ids)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=_QWEN_MIN_PIXELS, max_pixels=_QWEN_MAX_PIXELS)
    processor = image_only_processor_class("qwen2_vl")(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return model, processor


def _build_llava_onevision():
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = build_judge_tokenizer("llava_onevision")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _CHAT_SPECIALS + _VISION_SPECIALS["llava_onevision"]}
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), **_TEXT, bos_token_id=None,
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4, image_size=_LLAVA_IMAGE,
                           patch_size=_LLAVA_PATCH, vision_use_head=False),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[list(p) for p in _LLAVA_PINPOINTS],
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(built.SEED)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    _greedy_generation_config(model, ids)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": _LLAVA_IMAGE, "width": _LLAVA_IMAGE},
        image_grid_pinpoints=[list(p) for p in _LLAVA_PINPOINTS])
    processor = image_only_processor_class("llava_onevision")(
        image_processor=image_processor, tokenizer=tokenizer,
        num_image_tokens=(_LLAVA_IMAGE // _LLAVA_PATCH) ** 2,
        vision_feature_select_strategy="full", chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9")
    return model, processor


def _greedy_generation_config(model, ids: dict[str, int]) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
