"""Which Wan VAE layout learns the `shapes` world on 2 CPU cores: reconstruction read back.

Trains one ``AutoencoderKLWan`` (random init, seed 0) on 400 clips of the world's train split
(first ``--frames`` frames, random 32x32 crops, L2 + 0.5 L1 + 1e-6 KL, AdamW, constant learning
rate), then encodes and decodes 64 of those clips whole and reads them back with
metrics/world.py ``read_clip``: how often the shape's colour, the shape, the background and the
motion are still the caption's. Prints the per-frame error every 100 steps, the rates, and the
command that reproduces them. Used to choose agents/shapes/architectures.py ``_wan_vae`` (the
figures are in benchmarks/README.md, "The shapes zoo").

    .venv/bin/python benchmarks/bench_wan_vae_layouts.py --steps 1000 --patch 4 --mult 1 \\
        --temporal "" --dim 64 --frozen-attention          # the shapes zoo's layout
    .venv/bin/python benchmarks/bench_wan_vae_layouts.py --steps 600   # Wan 2.1's, small
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def decode_unclamped(vae, z):
    """AutoencoderKLWan._decode (diffusers models/autoencoders/autoencoder_kl_wan.py) without its
    final clamp to [-1, 1], which passes no gradient to pixels outside it. No patchify."""
    import torch

    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map,
                                  feat_idx=vae._conv_idx, first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--frames", type=int, default=5, help="frames of each clip trained on")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=16, help="base_dim")
    parser.add_argument("--mult", default="122", help="dim_mult, one digit a level")
    parser.add_argument("--temporal", default="11",
                        help="temperal_downsample, one 0/1 a level after the first")
    parser.add_argument("--patch", type=int, default=0, help="patch_size (0: none)")
    parser.add_argument("--residual", action="store_true", help="is_residual (Wan 2.2's VAE)")
    parser.add_argument("--frozen-attention", action="store_true",
                        help="mid-block attentions held at identity (proj = 0, frozen)")
    parser.add_argument("--unclamped", action="store_true",
                        help="train on the decoder's output before its clamp (no --patch)")
    parser.add_argument("--foreground-weight", type=float, default=1.0,
                        help="loss weight of pixels unlike the crop's corner (the shape)")
    args = parser.parse_args(argv)

    import torch
    from diffusers import AutoencoderKLWan

    from agents.finetune.losses import to_pixels
    from agents.shapes.training import _rates, world_clips

    torch.manual_seed(0)
    temporal = [c == "1" for c in args.temporal]
    mult = [int(c) for c in args.mult]
    patch = args.patch or None
    channels = 3 * (patch or 1) ** 2
    vae = AutoencoderKLWan(
        base_dim=args.dim, z_dim=8, dim_mult=mult, num_res_blocks=1,
        temperal_downsample=temporal, patch_size=patch, in_channels=channels,
        out_channels=channels, latents_mean=[0.0] * 8, latents_std=[1.0] * 8,
        scale_factor_temporal=2 ** sum(temporal),
        scale_factor_spatial=(patch or 1) * 2 ** (len(mult) - 1), is_residual=args.residual)
    if args.frozen_attention:
        for block in (vae.encoder.mid_block, vae.decoder.mid_block):
            for attention in block.attentions:
                torch.nn.init.zeros_(attention.proj.weight)
                torch.nn.init.zeros_(attention.proj.bias)
                attention.requires_grad_(False)
    scenes, clips = world_clips(400, 0, frames=9)
    clips = np.ascontiguousarray(clips[:, :args.frames])
    pixels = to_pixels(clips).movedim(1, 2)  # N x 3 x T x H x W
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad],
                                  lr=args.lr, weight_decay=0)
    generator = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(args.steps):
        index = torch.randint(0, len(pixels), (args.batch,), generator=generator)
        top, left = torch.randint(0, 33, (2,), generator=generator).tolist()
        x = pixels[index][..., top:top + 32, left:left + 32]
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=generator)
        out = decode_unclamped(vae, z) if args.unclamped else vae.decode(z).sample
        weight = 1.0 + (args.foreground_weight - 1.0) * (
            (x - x[..., :1, :1]).abs().amax(1, keepdim=True) > 0.1).float()
        error = out - x
        loss = ((weight * error ** 2).mean() + 0.5 * (weight * error.abs()).mean()
                + 1e-6 * posterior.kl().mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            per_frame = ((out.detach().clamp(-1, 1) - x) ** 2).mean(dim=(0, 1, 3, 4))
            print(f"step {step}: loss {loss.item():.4f}, per-frame MSE "
                  f"{[round(v, 3) for v in per_frame.tolist()]} ({time.time() - t0:.0f} s)",
                  flush=True)
    seconds = time.time() - t0
    vae.eval()
    with torch.no_grad():
        decoded = vae.decode(vae.encode(pixels[:64]).latent_dist.mode()).sample.movedim(2, 1)
    frames = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()
    rates = _rates(scenes[:64], frames)
    first = _rates(scenes[:64], frames[:, :1])
    print(f"{args.steps} steps in {seconds:.0f} s; read back over 64 clips: "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in rates.items())
          + f"; frame 0 alone: colour {100 * first['colour']:.1f} %")
    print("reproduce: .venv/bin/python benchmarks/bench_wan_vae_layouts.py "
          + shlex.join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
