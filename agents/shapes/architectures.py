"""The `shapes` zoo's models before training: the tiny zoo's pipelines (agents/tiny/pipelines.py:
their tokenizers, text encoders and schedulers, kept random: a denoiser learns whatever
embedding it is given) with a VAE and a denoiser sized to learn the `shapes` world
(configs/world/) on two CPU cores in minutes.

Sizes, and why: the world's frames are 64x64 flat colours, but a shape is only 16 px wide, so
the VAE downsamples 4x (3 levels; 16x16 latents with 4 channels) rather than the real models'
8x, where a shape would be 2x2 latents; it has no mid-block attention (a convolution sees all
a flat-colour frame needs, and trains ~2x faster without it). The SD3 transformer then has
8x8 = 64 patches.

The Wan image-to-video model (``wan-i2v``) takes text as well as the first frame (its UMT5
prompt embedding is where the paper's modulation concatenates). Its 3D VAE compresses 4x in
space by patchifying alone (4x4 pixels -> 48 channels; Wan 2.2's VAE patchifies 2x2), with no
convolutional down- or upsampling and no temporal compression: 9 frames -> 9 latent frames of
16x16, 8 channels; the transformer sees 2x2 patches, 9x8x8 = 576 tokens. Its mid-block
attentions are held at identity (output projection zero and frozen), as the SD3 VAE above has
none: attention over the whole frame would make the crops it trains on (agents/shapes/training.py)
teach something else than whole frames need. Why this layout (benchmarks/README.md, "The shapes
zoo", and benchmarks/bench_wan_vae_layouts.py): Wan 2.1's own layout at this size (2x2 conv
down/up in space and time, attention trained) read back 20-23 % of reconstructed shape colours
after 600-4000 steps, with a first latent frame that ended the same for every clip; any
temporal compression kept it below 35 % at 1000 steps; this layout reads back 89 %.
"""

from __future__ import annotations

from typing import Any

from agents.tiny.built import SEED

LATENT_CHANNELS = 4
VAE_CHANNELS = (16, 32, 32)  # 3 levels: 4x spatial downsampling
SD3_LAYERS, SD3_HEADS, SD3_HEAD_DIM = 4, 4, 16
WAN_Z = 8
WAN_VAE_DIM, WAN_VAE_PATCH = 64, 4  # 4x spatial by patchifying; no temporal compression
WAN_LAYERS, WAN_HEADS, WAN_HEAD_DIM = 4, 4, 16


def untrained(name: str) -> Any:
    """A freshly initialised (seeded) pipeline of the shapes zoo: ``sd3``."""
    import torch

    builders = {"sd3": _sd3, "wan-i2v": _wan_i2v}
    if name not in builders:
        raise ValueError(f"unknown shapes model {name!r} (known: {', '.join(builders)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return builders[name]()


def _vae() -> Any:
    from diffusers import AutoencoderKL

    levels = len(VAE_CHANNELS)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=VAE_CHANNELS,
        layers_per_block=1, norm_num_groups=8, latent_channels=LATENT_CHANNELS, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False)


def _sd3() -> Any:
    import torch
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from agents.tiny.pipelines import build_pipeline

    tiny = build_pipeline("sd3")  # tokenizers, CLIP x2 + T5 text encoders, flow-match scheduler
    vae = _vae()
    torch.manual_seed(SEED + 1)
    transformer = SD3Transformer2DModel(
        sample_size=64 // 2 ** (len(VAE_CHANNELS) - 1), patch_size=2,
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=SD3_LAYERS,
        attention_head_dim=SD3_HEAD_DIM, num_attention_heads=SD3_HEADS,
        joint_attention_dim=tiny.text_encoder_3.config.d_model,
        caption_projection_dim=SD3_HEADS * SD3_HEAD_DIM,
        pooled_projection_dim=2 * tiny.text_encoder.config.projection_dim,
        pos_embed_max_size=64)
    return StableDiffusion3Pipeline(**{**tiny.components, "vae": vae, "transformer": transformer})


def _wan_vae() -> Any:
    import torch
    from diffusers import AutoencoderKLWan

    channels = 3 * WAN_VAE_PATCH ** 2
    vae = AutoencoderKLWan(
        base_dim=WAN_VAE_DIM, z_dim=WAN_Z, dim_mult=[1], num_res_blocks=1,
        temperal_downsample=[], patch_size=WAN_VAE_PATCH, in_channels=channels,
        out_channels=channels, latents_mean=[0.0] * WAN_Z, latents_std=[1.0] * WAN_Z,
        scale_factor_temporal=1, scale_factor_spatial=WAN_VAE_PATCH)
    for block in (vae.encoder.mid_block, vae.decoder.mid_block):
        for attention in block.attentions:  # x + proj(attention(x)) with proj = 0: identity
            torch.nn.init.zeros_(attention.proj.weight)
            torch.nn.init.zeros_(attention.proj.bias)
            attention.requires_grad_(False)  # train_vae optimises what requires grad
    return vae


def _wan_i2v() -> Any:
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from agents.tiny.pipelines import build_pipeline

    tiny = build_pipeline("wan-i2v")  # UMT5 + tokenizer, CLIP vision + processor, UniPC
    vae = _wan_vae()
    torch.manual_seed(SEED + 2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=WAN_HEADS, attention_head_dim=WAN_HEAD_DIM,
        in_channels=2 * WAN_Z + vae.config.scale_factor_temporal,  # noisy + condition + mask
        out_channels=WAN_Z, text_dim=tiny.text_encoder.config.d_model, freq_dim=64,
        ffn_dim=4 * WAN_HEADS * WAN_HEAD_DIM, num_layers=WAN_LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6,
        image_dim=tiny.transformer.config.image_dim, rope_max_seq_len=32)
    return WanImageToVideoPipeline(**{**tiny.components, "vae": vae, "transformer": transformer})
