"""The published architectures of the GPU profiles' checkpoints: each component's ``config.json``
values, recorded with where they come from (the model repos and diffusers' conversion scripts).

Data only: agents/random_weights.py builds these architectures with random weights, offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_HF = "https://huggingface.co/"


def _config_urls(repo: str, *files: str) -> tuple[str, ...]:
    """Where a checkpoint's component configs are published (the values recorded here)."""
    return tuple(f"{_HF}{repo}/blob/main/{name}" for name in files)


@dataclass(frozen=True)
class Published:
    """One checkpoint's architecture: its components' configs and where the values come from."""

    pipeline: str
    components: dict[str, dict[str, Any]]
    sources: tuple[str, ...]
    note: str = ""
    without: tuple[str, ...] = ()  # components left out of the build (loaded as None)


# CLIP text towers of SD3 (and SDXL): ViT-L/14's (OpenAI) and OpenCLIP ViT-bigG/14's.
_CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                    projection_dim=768, layer_norm_eps=1e-5)
_CLIP_G_TEXT = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                    num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                    projection_dim=1280, layer_norm_eps=1e-5)
# OpenCLIP ViT-H/14 image tower (SVD's image_encoder, Wan 2.1 I2V/FLF2V's image_encoder).
_CLIP_H_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                      image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
# OpenCLIP ViT-H/14 text tower: the CLIP SVD's image encoder belongs to (profiles' text_tower).
_CLIP_H_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                    projection_dim=1024, layer_norm_eps=1e-5)
# The KL VAE of Stable Diffusion 1.x/2.x/XL (8x, 4 latent channels); SD3's differs in latents.
_SD_VAE = dict(block_out_channels=[128, 256, 512, 512], latent_channels=4, layers_per_block=2,
               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
# The noise schedule Stable Diffusion, SDXL and SVD were trained with.
_SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 steps_offset=1)
_WAN_I2V_TRANSFORMER = dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=36,
                            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                            added_kv_proj_dim=5120)
_UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj="gated-gelu", is_encoder_decoder=False)

PUBLISHED: dict[str, Published] = {
    "stabilityai/stable-diffusion-3-medium-diffusers": Published(
        pipeline="StableDiffusion3Pipeline",
        components={
            "transformer": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192),
            "text_encoder": _CLIP_L_TEXT,
            "text_encoder_2": _CLIP_G_TEXT,
            "vae": dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                        layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                        use_post_quant_conv=False),
            "scheduler": dict(num_train_timesteps=1000, shift=3.0),
        },
        sources=(*_config_urls("stabilityai/stable-diffusion-3-medium-diffusers", "transformer/config.json",
                               "vae/config.json", "text_encoder/config.json", "text_encoder_2/config.json"),
                 "diffusers scripts/convert_sd3_to_diffusers.py (the same transformer/VAE values)"),
        note="text_encoder_3 (T5-XXL) dropped, as StableDiffusion3Pipeline allows: T5 rows are zeros",
        without=("text_encoder_3", "tokenizer_3"),
    ),
    "stabilityai/stable-video-diffusion-img2vid-xt": Published(
        pipeline="StableVideoDiffusionPipeline",
        components={
            # diffusers' defaults of UNetSpatioTemporalConditionModel are SVD's UNet (1.525 B).
            "unet": {},
            "vae": dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                        sample_size=768, scaling_factor=0.18215, force_upcast=True),
            "image_encoder": _CLIP_H_VISION,
            "scheduler": dict(_SD_BETAS, interpolation_type="linear", prediction_type="v_prediction",
                              sigma_max=700.0, sigma_min=0.002, timestep_spacing="leading",
                              timestep_type="continuous", use_karras_sigmas=True),
        },
        sources=_config_urls("stabilityai/stable-video-diffusion-img2vid-xt", "unet/config.json", "vae/config.json",
                             "image_encoder/config.json", "scheduler/scheduler_config.json"),
    ),
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": Published(
        pipeline="CLIPTextModelWithProjection",
        components={"text_encoder": _CLIP_H_TEXT},
        sources=_config_urls("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "config.json"),
        note="the text tower only (the vision tower is SVD's image_encoder); its projection_dim is "
             "the CLIP config's (the published text_config leaves it at the 512 default)",
    ),
    "stabilityai/stable-diffusion-xl-base-1.0": Published(
        pipeline="StableDiffusionXLPipeline",
        components={
            "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                         down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                         up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                         block_out_channels=[320, 640, 1280], transformer_layers_per_block=[1, 2, 10],
                         attention_head_dim=[5, 10, 20], cross_attention_dim=2048, use_linear_projection=True,
                         addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=2816, norm_num_groups=32),
            "text_encoder": _CLIP_L_TEXT,
            "text_encoder_2": _CLIP_G_TEXT,
            "vae": dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
            "scheduler": dict(_SD_BETAS, timestep_spacing="leading", prediction_type="epsilon",
                              interpolation_type="linear"),
        },
        sources=_config_urls("stabilityai/stable-diffusion-xl-base-1.0", "unet/config.json", "vae/config.json",
                             "text_encoder/config.json", "text_encoder_2/config.json"),
    ),
    "timbrooks/instruct-pix2pix": Published(
        pipeline="StableDiffusionInstructPix2PixPipeline",
        components={
            # Stable Diffusion 1.5's UNet with 8 input channels (4 noise + 4 image latents).
            "unet": dict(sample_size=64, in_channels=8, out_channels=4, layers_per_block=2,
                         down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                         up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                         block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8, cross_attention_dim=768),
            "text_encoder": _CLIP_L_TEXT,
            "vae": dict(_SD_VAE, sample_size=256, scaling_factor=0.18215),
            "scheduler": dict(_SD_BETAS),
        },
        sources=_config_urls("timbrooks/instruct-pix2pix", "unet/config.json", "vae/config.json",
                             "text_encoder/config.json", "scheduler/scheduler_config.json"),
    ),
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": Published(
        pipeline="WanImageToVideoPipeline",
        components={"transformer": _WAN_I2V_TRANSFORMER, "text_encoder": _UMT5_XXL,
                    "image_encoder": _CLIP_H_VISION, "vae": {},
                    "scheduler": dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                      num_train_timesteps=1000, flow_shift=3.0)},
        sources=("diffusers scripts/convert_wan_to_diffusers.py, model type Wan-I2V-14B-480p",
                 _HF + "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/blob/main/transformer/config.json"),
    ),
    "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers": Published(
        pipeline="WanImageToVideoPipeline",
        components={"transformer": {**_WAN_I2V_TRANSFORMER, "pos_embed_seq_len": 2 * 257},
                    "text_encoder": _UMT5_XXL, "image_encoder": _CLIP_H_VISION, "vae": {},
                    "scheduler": dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                      num_train_timesteps=1000, flow_shift=16.0)},
        sources=("diffusers scripts/convert_wan_to_diffusers.py, model type Wan-FLF2V-14B-720P "
                 "(the I2V transformer with pos_embed_seq_len = 2 x 257 image tokens)",
                 _HF + "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers/blob/main/transformer/config.json"),
    ),
}
