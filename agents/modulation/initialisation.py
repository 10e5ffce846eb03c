"""Where a modulation starts: an encoder's output for an added special token (the paper's
init), or the typical norm of real conditioning rows that scales a random init (see
agents/modulation/__init__.py)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from agents.modulation.families import conditioning_width, denoiser_of, device_of, family_of
from configs.errors import MoraError

REFERENCE_PROMPT = "a video of a scene"
SD3_T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length
WAN_TEXT_LENGTH = 512  # WanImageToVideoPipeline's default max_sequence_length (hard-wired in its attention)



class _ExtendedEmbedding(torch.nn.Module):
    """An input-embedding view: the base table for known ids, ``row`` for ``new_id``."""

    def __init__(self, base: torch.nn.Module, new_id: int, row: torch.Tensor):
        super().__init__()
        self.base = base
        self.new_id = new_id
        self.register_buffer("row", row, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        size = self.base.weight.shape[0]
        out = self.base(input_ids.clamp(max=size - 1))
        hit = (input_ids == self.new_id)[..., None]
        return torch.where(hit, self.row.to(out.dtype), out)


def _with_input_embedding(model: torch.nn.Module, new_embedding: torch.nn.Module) -> torch.nn.Module:
    """A shallow view of ``model`` whose input embedding is ``new_embedding``; ``model`` is untouched.

    Only the modules on the path(s) to the embedding are copied (their child dicts too); every
    other submodule and every parameter is shared. T5 keeps the table at two paths (``shared``
    and ``encoder.embed_tokens``, two modules tying one weight): all are replaced.
    """
    old = model.get_input_embeddings()
    paths = [name for name, m in model.named_modules(remove_duplicate=False)
             if name and (m is old or getattr(m, "weight", None) is old.weight)]
    copies: dict[int, torch.nn.Module] = {}

    def clone(module: torch.nn.Module) -> torch.nn.Module:
        if id(module) not in copies:
            twin = copy.copy(module)
            twin._modules = dict(module._modules)
            copies[id(module)] = twin
        return copies[id(module)]

    root = clone(model)
    for path in paths:
        parent_orig, parent = model, root
        *parts, last = path.split(".")
        for part in parts:
            child_orig = parent_orig._modules[part]
            child = clone(child_orig)
            parent._modules[part] = child
            parent_orig, parent = child_orig, child
        parent._modules[last] = new_embedding
    return root


def encode_special_token(
    tokenizer: Any,
    encoder: torch.nn.Module,
    special_token: str,
    tokens: int,
    *,
    max_length: int | None,
    attention_mask: bool,
) -> torch.Tensor:
    """``tokens×hidden`` last hidden states of ``encoder`` at the positions of an added token.

    Equal to: add ``special_token`` to the tokenizer, ``resize_token_embeddings``, set the new
    row to the mean of the existing vocabulary's rows, encode ``special_token * tokens`` and take
    the hidden states at its positions — without modifying ``tokenizer`` or ``encoder``.
    """
    if not special_token or any(c.isspace() for c in special_token):
        raise MoraError(f"special token {special_token!r} must be non-empty without spaces")
    tok = copy.deepcopy(tokenizer)
    table = encoder.get_input_embeddings()
    known = len(tok)
    tok.add_tokens([special_token], special_tokens=True)
    new_id = tok.convert_tokens_to_ids(special_token)
    model = encoder
    if len(tok) > known:  # genuinely new: give it the mean row
        row = table.weight[: min(known, table.weight.shape[0])].float().mean(dim=0).to(table.weight.dtype)
        model = _with_input_embedding(encoder, _ExtendedEmbedding(table, new_id, row))
    padding = {"padding": "max_length", "max_length": max_length, "truncation": True} if max_length else {}
    batch = tok(special_token * tokens, return_tensors="pt", add_special_tokens=True, **padding)
    ids = batch.input_ids.to(table.weight.device)
    kwargs = {"attention_mask": batch.attention_mask.to(ids.device)} if attention_mask else {}
    hidden = model(ids, **kwargs).last_hidden_state[0]
    where = (ids[0] == new_id).nonzero().flatten()
    if len(where) != tokens:
        raise MoraError(f"the tokenizer split {special_token!r} into pieces: choose another special token")
    return hidden[where].float()


def special_token_states(
    pipe: Any, special_token: str, tokens: int, clip_text: tuple[Any, Any] | None = None
) -> torch.Tensor:
    """``tokens×D`` init of the ``special_token`` mode for ``pipe`` (see the module docstring)."""
    family = family_of(pipe)
    dim = conditioning_width(pipe)
    if family == "sd3":
        encoder, tokenizer = getattr(pipe, "text_encoder_3", None), getattr(pipe, "tokenizer_3", None)
        if encoder is None or tokenizer is None:
            raise MoraError("modulation 'special_token' on SD3 needs its T5 text encoder (text_encoder_3); "
                            "load it or use modulation 'random'")
        if encoder.config.d_model != dim:
            raise MoraError(f"SD3's T5 width {encoder.config.d_model} differs from the joint attention "
                            f"width {dim}; use modulation 'random'")
        return encode_special_token(tokenizer, encoder, special_token, tokens,
                                    max_length=SD3_T5_LENGTH, attention_mask=False)
    if family == "wan":
        encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
        if encoder is None or tokenizer is None:
            raise MoraError("modulation 'special_token' on Wan needs its text encoder; use 'random'")
        return encode_special_token(tokenizer, encoder, special_token, tokens,
                                    max_length=WAN_TEXT_LENGTH, attention_mask=True)
    # svd: no text encoder of its own.
    if clip_text is None:
        raise MoraError("modulation 'special_token' on SVD needs the CLIP text tower paired with its "
                        "image encoder (SVD has no text encoder): name it in the profile "
                        "(image_to_video.text_tower) or use modulation 'random' or 'off'")
    tokenizer, encoder = clip_text
    projection = getattr(encoder, "text_projection", None)
    if projection is None or projection.out_features != dim:
        raise MoraError(f"the CLIP text encoder for SVD's special token must project to the UNet's "
                        f"cross-attention width {dim}")
    states = encode_special_token(tokenizer, encoder, special_token, tokens,
                                  max_length=None, attention_mask=False)
    return projection(states.to(projection.weight.dtype)).float()


def _mean_row_norm(embeds: torch.Tensor) -> float:
    rows = embeds.reshape(-1, embeds.shape[-1]).float()
    rows = rows[rows.abs().sum(-1) != 0]
    return float(rows.norm(dim=-1).mean()) if len(rows) else 1.0


def typical_norm(pipe: Any) -> float:
    """Mean norm of real conditioning rows (a reference prompt; SVD: a mid-grey frame's embedding)."""
    family = family_of(pipe)
    device = device_of(denoiser_of(pipe))
    with torch.no_grad():
        if family == "sd3":
            embeds = pipe.encode_prompt(REFERENCE_PROMPT, None, None, device=device,
                                        do_classifier_free_guidance=False)[0]
        elif family == "wan":
            embeds = pipe.encode_prompt(REFERENCE_PROMPT, do_classifier_free_guidance=False, device=device)[0]
        else:
            from PIL import Image

            grey = Image.new("RGB", (224, 224), (128, 128, 128))
            embeds = pipe._encode_image(grey, device, 1, False)
    return _mean_row_norm(embeds)
