"""The tiny diffusers pipelines: small random SD3, SVD, Wan (I2V and FLF2V) and InstructPix2Pix
models built from explicit configs with a fixed seed (``torch.manual_seed`` before every
component), their tokenizers from agents/tiny/vocab.py. agents/tiny/zoo.py saves and caches them.

The shapes follow the real models' size rules (8x spatial VAEs, SD3 patch 2, Wan 4x temporal
compression) so a profile that runs on the tiny zoo runs with the same sizes on real weights.
One builder per pipeline below (``_build_sd3``, ``_build_svd``, ``_build_wan``, ``_build_ip2p``).
Heavy imports live inside them so ``import agents.tiny`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from agents.tiny.built import SEED

# CLIP vision tower shared in shape by SVD and Wan: 224 px (SVD resizes to 224), patch 32 -> 7x7+1 = 50 tokens.
_VISION_IMAGE_SIZE = 224
_VISION_PATCH = 32
_VISION_TOKENS = (_VISION_IMAGE_SIZE // _VISION_PATCH) ** 2 + 1


def build_pipeline(name: str):
    """A freshly initialised (unsaved) tiny pipeline for ``name`` (a name of
    ``agents.tiny.zoo.TINY_MODELS``); deterministic for a given name."""
    import torch

    builders: dict[str, Callable] = {
        "sd3": _build_sd3,
        "svd": _build_svd,
        "wan-i2v": lambda: _build_wan(first_last_frame=False),
        "wan-flf2v": lambda: _build_wan(first_last_frame=True),
        "ip2p": _build_ip2p,
    }
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):
            return builders[name]()
    finally:
        torch.set_default_dtype(previous)


def _seeded(factory: Callable):
    import torch

    torch.manual_seed(SEED)
    return factory()


def _t5_encoder_kwargs(tokenizer, d_model: int, d_kv: int) -> dict:
    """A two-layer T5/UMT5 encoder config (the two configs take the same fields)."""
    return dict(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_kv, d_ff=64, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)


def _clip_text_encoder(tokenizer, cls_name: str, hidden: int = 32, projection: int | None = 32):
    import transformers
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = getattr(transformers, cls_name)
    return _seeded(lambda: cls(config).eval())


def _clip_vision_encoder(cls_name: str, hidden: int = 32, projection: int = 32):
    import transformers
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig(
        hidden_size=hidden,
        projection_dim=projection,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=_VISION_IMAGE_SIZE,
        patch_size=_VISION_PATCH,
    )
    cls = getattr(transformers, cls_name)
    return _seeded(lambda: cls(config).eval())


def _clip_image_processor():
    # The PIL processor explicitly: same files with or without torchvision, and no fallback warning.
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": _VISION_IMAGE_SIZE},
        crop_size={"height": _VISION_IMAGE_SIZE, "width": _VISION_IMAGE_SIZE},
    )


def _kl_vae(latent_channels: int, **kwargs):
    from diffusers import AutoencoderKL

    # 4 levels -> 8x spatial downsampling, like the real SD/SD3 VAEs.
    return _seeded(
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=latent_channels,
            sample_size=64,
            **kwargs,
        ).eval()
    )


def _build_sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    from agents.tiny.vocab import build_clip_tokenizer, build_t5_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer()
    tokenizer_3 = build_t5_tokenizer()
    clip_hidden, clip_proj, t5_dim = 32, 32, 64
    text_encoder = _clip_text_encoder(tokenizer, "CLIPTextModelWithProjection", clip_hidden, clip_proj)
    text_encoder_2 = _clip_text_encoder(tokenizer_2, "CLIPTextModelWithProjection", clip_hidden, clip_proj)
    t5_config = T5Config(**_t5_encoder_kwargs(tokenizer_3, d_model=t5_dim, d_kv=16))
    text_encoder_3 = _seeded(lambda: T5EncoderModel(t5_config).eval())
    transformer = _seeded(
        lambda: SD3Transformer2DModel(
            sample_size=8,  # default 64 px with the 8x VAE
            patch_size=2,
            in_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=t5_dim,  # >= the two CLIP hidden sizes side by side
            caption_projection_dim=32,  # = num_attention_heads * attention_head_dim
            pooled_projection_dim=2 * clip_proj,
            out_channels=16,
            pos_embed_max_size=64,
        ).eval()
    )
    vae = _kl_vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def _build_svd():
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

    image_encoder = _clip_vision_encoder("CLIPVisionModelWithProjection", hidden=32, projection=32)
    feature_extractor = _clip_image_processor()
    unet = _seeded(
        lambda: UNetSpatioTemporalConditionModel(
            sample_size=8,  # default 64 px with the 8x VAE
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            block_out_channels=(32, 32),
            addition_time_embed_dim=16,
            projection_class_embeddings_input_dim=3 * 16,  # fps, motion bucket, noise augmentation
            layers_per_block=1,
            cross_attention_dim=32,  # = image encoder projection_dim
            num_attention_heads=(2, 2),
        ).eval()
    )
    # The temporal decoder hard-codes GroupNorm(32): channels are multiples of 32.
    vae = _seeded(
        lambda: AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
            scaling_factor=0.18215,
        ).eval()
    )
    # Configured like stabilityai/stable-video-diffusion-img2vid's scheduler.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        trained_betas=None,
        use_karras_sigmas=True,
    )
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )


def build_svd_text_tower(folder: Path) -> None:
    """Save at ``folder`` the CLIP the tiny SVD's image encoder belongs to: its vision tower (the
    same weights) and a text tower projecting to the same width, with a tokenizer — laid out like
    laion/CLIP-ViT-H-14-laion2B-s32B-b79K, whose text config does not carry the projection width
    either (agents/loading.py's load_text_tower reads it from the CLIP config)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from agents.tiny.vocab import build_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        tokenizer = build_clip_tokenizer()
        text = _clip_text_encoder(tokenizer, "CLIPTextModelWithProjection", hidden=32, projection=32)
        vision = _clip_vision_encoder("CLIPVisionModelWithProjection", hidden=32, projection=32)
        text_config = {k: v for k, v in text.config.to_dict().items() if k != "projection_dim"}
        config = CLIPConfig(text_config=text_config, vision_config=vision.config.to_dict(), projection_dim=32)
        clip = _seeded(lambda: CLIPModel(config).eval())
    missing, _ = clip.load_state_dict({**text.state_dict(), **vision.state_dict()}, strict=False)
    assert missing == ["logit_scale"], missing
    clip.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _build_wan(first_last_frame: bool):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from agents.tiny.vocab import build_t5_tokenizer

    tokenizer = build_t5_tokenizer()
    text_dim = 32
    umt5_config = UMT5Config(**_t5_encoder_kwargs(tokenizer, d_model=text_dim, d_kv=8))
    text_encoder = _seeded(lambda: UMT5EncoderModel(umt5_config).eval())
    # Wan 2.1 I2V/FLF2V use the penultimate hidden states of a CLIP vision tower (CLIPVisionModel).
    vision_hidden = 16
    image_encoder = _clip_vision_encoder("CLIPVisionModel", hidden=vision_hidden, projection=vision_hidden)
    image_processor = _clip_image_processor()
    z_dim = 16
    vae = _seeded(
        lambda: AutoencoderKLWan(
            base_dim=8,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],  # 3 spatial downsamples -> 8x
            num_res_blocks=1,
            temperal_downsample=[False, True, True],  # 4x temporal
        ).eval()
    )
    transformer = _seeded(
        lambda: WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=2 * z_dim + 4,  # noisy latents + condition latents + 4 mask channels
            out_channels=z_dim,
            text_dim=text_dim,
            freq_dim=32,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            image_dim=vision_hidden,
            rope_max_seq_len=32,
            # FLF2V: the first and last frames' CLIP tokens are stacked into one sequence of
            # 2 x tokens with a learnt position table (real: 2 x 257 = 514). This is why an FLF2V
            # transformer cannot take a single image, and an I2V one cannot take two.
            pos_embed_seq_len=2 * _VISION_TOKENS if first_last_frame else None,
        ).eval()
    )
    # Wan 2.1's own scheduler: UniPC on flow sigmas (shift 3.0 as the 480p checkpoints; 720p uses 5.0).
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_processor=image_processor,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
    )


def _build_ip2p():
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    from agents.tiny.vocab import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    text_encoder = _clip_text_encoder(tokenizer, "CLIPTextModel", hidden=32, projection=None)
    unet = _seeded(
        lambda: UNet2DConditionModel(
            sample_size=8,  # default 64 px with the 8x VAE
            in_channels=8,  # noisy latents + the input image's latents
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 32),
            layers_per_block=1,
            cross_attention_dim=32,  # = text encoder hidden size
            attention_head_dim=8,
        ).eval()
    )
    vae = _kl_vae(4, scaling_factor=0.18215)
    # As timbrooks/instruct-pix2pix ships it.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
