"""The MLLM architectures the transformers judge runs: each one's model class, its processor
without a video processor, and the folder of its tiny random build (agents/tiny/judges.py)."""

from __future__ import annotations

from functools import lru_cache

from configs.errors import MoraError

MODEL_CLASSES: dict[str, str] = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}

#: arch -> the processor class a real checkpoint's processor files name.
PROCESSOR_CLASSES: dict[str, str] = {
    "qwen2_vl": "Qwen2VLProcessor",
    "llava_onevision": "LlavaOnevisionProcessor",
}

#: arch -> folder name of its tiny random build under ``<MORA_HOME>/tiny`` (``tiny:<folder>``).
TINY_JUDGES: dict[str, str] = {
    "qwen2_vl": "judge-qwen2-vl",
    "llava_onevision": "judge-llava-onevision",
}


def arch_for_tiny_name(name: str) -> str | None:
    """``judge-qwen2-vl`` -> ``qwen2_vl`` (None when ``name`` is not a tiny judge)."""
    return next((arch for arch, folder in TINY_JUDGES.items() if folder == name), None)


@lru_cache(maxsize=None)
def image_only_processor_class(arch: str) -> type:
    """``Qwen2VLProcessor`` / ``LlavaOnevisionProcessor`` without their video processor.

    transformers checks every processor argument's class, and the video processor's needs
    torchvision; judges pass frames as images, so these subclasses drop it.  They load a real
    checkpoint's processor files (tokenizer, image processor, chat template) with
    ``from_pretrained``.
    """
    if arch == "qwen2_vl":
        from transformers import Qwen2VLProcessor

        class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                kwargs.pop("video_processor", None)
                super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 chat_template=chat_template, **kwargs)
                self.video_processor = None

        return ImageOnlyQwen2VLProcessor
    if arch == "llava_onevision":
        from transformers import LlavaOnevisionProcessor

        class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
            def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                         vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                         video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
                kwargs.pop("video_processor", None)
                super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 num_image_tokens=num_image_tokens,
                                 vision_feature_select_strategy=vision_feature_select_strategy,
                                 chat_template=chat_template, image_token=image_token, video_token=video_token,
                                 vision_aspect_ratio=vision_aspect_ratio, **kwargs)
                self.video_processor = None

        return ImageOnlyLlavaOnevisionProcessor
    raise MoraError(f"unsupported judge architecture {arch!r} (known: qwen2_vl, llava_onevision)")
