"""Self-modulation (paper §3.2, Algorithm 1): a learnable K×D embedding joined to the text embedding.

The modulation embedding ``m`` is a ``K×D`` parameter (``D`` = the width of the denoiser's
``encoder_hidden_states``) concatenated on the sequence axis of the conditioning the denoiser
attends to; its L2 (Frobenius) norm is the paper's *modulation factor*. It is trained together
with the agent's weights (:mod:`agents.finetune`) and, at sampling time, appended by a forward
pre-hook on the denoiser (:func:`install`) to *every* call: the conditional and the
unconditional branch of classifier-free guidance alike, so both keep the same length.

Where it goes, per family (detected from the pipeline class, :func:`family_of`):

* ``sd3`` (text-to-image): appended after the joint text sequence ``encode_prompt`` returns
  (77 CLIP tokens + the T5 tokens); the pooled projections are untouched.
* ``wan`` (image-to-video, UMT5 text encoder): Wan's prompt embeddings are the real tokens
  followed by zero rows up to ``max_sequence_length`` (512), and its I2V attention splits image
  from text context assuming exactly 512 text rows. So the modulation is concatenated to the
  *unpadded* text embedding — written into the first K zero rows after each prompt's last real
  token — and the length stays 512 (what the pipeline would build had the encoder emitted K more
  tokens). A prompt already filling all rows has its last K rows replaced.
* ``svd`` (image-to-video, conditioned on one CLIP *image* embedding, no text encoder): appended
  after that image token ([B, 1, D] -> [B, 1+K, D]).

Initialisation (``mode``):

* ``special_token``: the text encoder's output for an added special token. The token is added
  to a *copy* of the tokenizer; the encoder is not resized in place (the pipeline may be shared
  with sampling): it runs through a shallow view whose input-embedding module knows the new row,
  which is what ``resize_token_embeddings`` + encoding gives when the new row is the mean of the
  existing vocabulary's rows (transformers' ``mean_resizing`` centre, without its random draw, so
  the init is deterministic). K tokens: the string is the token repeated K times and the K hidden
  states at its positions are taken. sd3 uses T5 (``text_encoder_3``, last hidden state, padded
  to 256 tokens without a mask as the pipeline encodes); wan uses UMT5 (last hidden state, with
  the attention mask as the pipeline encodes). svd has no text encoder: pass ``clip_text=
  (tokenizer, CLIPTextModelWithProjection)`` of the CLIP model paired with SVD's image tower —
  CLIP trains the projected text and image embeddings into one joint space, and SVD's
  conditioning *is* the projected image embedding, so the projected hidden state of the special
  token is a principled init in that space (its projection width must equal the UNet's
  cross-attention dim). A profile names it as ``image_to_video.text_tower`` (SVD-XT's image
  encoder is OpenCLIP ViT-H/14: ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, projection 1024; the
  tiny zoo's is in ``tiny:svd``'s ``text_tower`` folder) and agents/loading.py's
  ``load_text_tower`` loads it. Without one, ``special_token`` on SVD is a one-line
  :class:`MoraError`.
* ``random``: seeded standard normal rows scaled so each row's norm is the typical norm of real
  conditioning rows (the mean row norm of a reference prompt's encoding; SVD: of the CLIP image
  embedding of a mid-grey frame).
* ``off``: no modulation (:meth:`ModulationEmbedding.create` returns ``None``).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from configs.errors import MoraError

FAMILIES = ("sd3", "wan", "svd")
MODES = ("special_token", "random", "off")
REFERENCE_PROMPT = "a video of a scene"
SD3_T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length
WAN_TEXT_LENGTH = 512  # WanImageToVideoPipeline's default max_sequence_length (hard-wired in its attention)
_HOOK_ATTR = "_mora_modulation_hook"


def family_of(pipe: Any) -> str:
    """``sd3`` / ``wan`` / ``svd`` from the pipeline class; anything else is a MoraError."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("Wan"):
        return "wan"
    if name.startswith("StableVideoDiffusion"):
        return "svd"
    raise MoraError(f"self-modulated fine-tuning supports SD3, Wan and SVD pipelines, not {name}")


def denoiser_of(pipe: Any) -> torch.nn.Module:
    """The module the modulation feeds: the SD3/Wan transformer or the SVD UNet."""
    family = family_of(pipe)
    module = pipe.unet if family == "svd" else pipe.transformer
    if module is None:
        raise MoraError(f"{type(pipe).__name__} has no denoiser loaded")
    return module


def layout_of(family: str) -> str:
    return "fill" if family == "wan" else "append"


class ModulationEmbedding(torch.nn.Module):
    """A ``K×D`` learnable embedding joined to the denoiser's ``encoder_hidden_states``.

    ``layout`` is ``append`` (concatenate after the sequence: SD3, SVD) or ``fill`` (concatenate
    after each row's last non-zero token inside the zero padding, keeping the length: Wan).
    """

    def __init__(self, init: torch.Tensor, layout: str = "append", mode: str = "special_token"):
        super().__init__()
        if init.ndim != 2 or init.shape[0] < 1:
            raise MoraError(f"a modulation embedding is K×D, got shape {tuple(init.shape)}")
        if layout not in ("append", "fill"):
            raise MoraError(f"unknown modulation layout {layout!r}")
        self.weight = torch.nn.Parameter(init.detach().clone().float())
        self.layout = layout
        self.mode = mode

    @property
    def tokens(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def factor(self) -> float:
        """The modulation factor: the L2 norm of the embedding."""
        return float(self.weight.detach().float().norm())

    def append(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Join the modulation to ``[B, L, D]`` conditioning (batch-broadcast); differentiable."""
        ehs = encoder_hidden_states
        if ehs.ndim != 3 or ehs.shape[-1] != self.dim:
            raise MoraError(f"modulation of width {self.dim} cannot join conditioning of shape "
                            f"{tuple(ehs.shape)}")
        mod = self.weight.to(device=ehs.device, dtype=ehs.dtype)
        batch, length, dim = ehs.shape
        mod = mod.unsqueeze(0).expand(batch, -1, -1)
        if self.layout == "append":
            return torch.cat([ehs, mod], dim=1)
        # fill: after the last real (non-zero) row, inside the zero padding.
        k = self.tokens
        if length < k:
            raise MoraError(f"conditioning of {length} tokens has no room for {k} modulation tokens")
        real = ehs.detach().abs().sum(-1) != 0  # [B, L]
        positions = torch.arange(1, length + 1, device=ehs.device).expand(batch, -1)
        ends = (positions * real).amax(dim=1)  # index after the last real row (0: none)
        starts = torch.clamp(ends, max=length - k)
        index = (starts[:, None] + torch.arange(k, device=ehs.device)[None, :])[..., None].expand(-1, -1, dim)
        return ehs.scatter(1, index, mod)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens}, dim={self.dim}, layout={self.layout}, mode={self.mode}"

    # ---------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        pipe: Any,
        mode: str = "special_token",
        tokens: int = 1,
        special_token: str = "<mora-mod>",
        seed: int = 0,
        clip_text: tuple[Any, Any] | None = None,
    ) -> "ModulationEmbedding | None":
        """A modulation initialised for ``pipe`` (not modified) per ``mode``; ``None`` for ``off``."""
        if mode not in MODES:
            raise MoraError(f"unknown modulation mode {mode!r} (known: {', '.join(MODES)})")
        if mode == "off":
            return None
        if tokens < 1:
            raise MoraError("modulation_tokens must be at least 1")
        family = family_of(pipe)
        dim = conditioning_width(pipe)
        with torch.no_grad():
            if mode == "special_token":
                init = special_token_states(pipe, special_token, tokens, clip_text=clip_text)
            else:
                generator = torch.Generator(device="cpu").manual_seed(int(seed))
                rows = torch.randn(tokens, dim, generator=generator)
                rows = rows / rows.norm(dim=-1, keepdim=True) * typical_norm(pipe)
                init = rows
        if init.shape != (tokens, dim):
            raise MoraError(f"modulation init has shape {tuple(init.shape)}, expected {(tokens, dim)}")
        module = cls(init.float().cpu(), layout=layout_of(family), mode=mode)
        return module.to(_device_of(denoiser_of(pipe)))


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def conditioning_width(pipe: Any) -> int:
    """``D``: the width of the ``encoder_hidden_states`` the denoiser takes."""
    family = family_of(pipe)
    cfg = denoiser_of(pipe).config
    if family == "sd3":
        return int(cfg.joint_attention_dim)
    if family == "wan":
        return int(cfg.text_dim)
    return int(cfg.cross_attention_dim)


# ------------------------------------------------------------------------------------------
# Encoder helpers


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
    device = _device_of(denoiser_of(pipe))
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


# ------------------------------------------------------------------------------------------
# Inference hook


class _ModulationHook:
    """Forward pre-hook appending the modulation to ``encoder_hidden_states`` of every call."""

    def __init__(self, modulation: ModulationEmbedding, position: int | None):
        self.modulation = modulation
        self.position = position
        self.handle = None

    def __call__(self, module, args, kwargs):
        if kwargs.get("encoder_hidden_states") is not None:
            kwargs = dict(kwargs)
            kwargs["encoder_hidden_states"] = self.modulation.append(kwargs["encoder_hidden_states"])
        elif self.position is not None and len(args) > self.position and args[self.position] is not None:
            args = list(args)
            args[self.position] = self.modulation.append(args[self.position])
            args = tuple(args)
        return args, kwargs

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def install(component: torch.nn.Module, modulation: ModulationEmbedding) -> _ModulationHook:
    """Append ``modulation`` to every call of ``component`` (the denoiser); returns a removable hook.

    Replaces a modulation installed earlier on the same module. ``hook.remove()`` or
    :func:`uninstall` takes it off.
    """
    uninstall(component)
    params = list(inspect.signature(component.forward).parameters)
    position = params.index("encoder_hidden_states") if "encoder_hidden_states" in params else None
    hook = _ModulationHook(modulation, position)
    hook.handle = component.register_forward_pre_hook(hook, with_kwargs=True)
    setattr(component, _HOOK_ATTR, hook)
    return hook


def uninstall(component: torch.nn.Module) -> None:
    """Remove the modulation hook :func:`install` put on ``component`` (no-op if none)."""
    hook = getattr(component, _HOOK_ATTR, None)
    if hook is not None:
        hook.remove()
        delattr(component, _HOOK_ATTR)


def installed(component: torch.nn.Module) -> ModulationEmbedding | None:
    hook = getattr(component, _HOOK_ATTR, None)
    return hook.modulation if hook is not None else None


def strip_hooks(component: torch.nn.Module) -> None:
    """Drop modulation hooks from a (deep-copied) module, e.g. a training copy of a hooked denoiser."""
    for key, fn in list(component._forward_pre_hooks.items()):
        if isinstance(fn, _ModulationHook):
            del component._forward_pre_hooks[key]
            component._forward_pre_hooks_with_kwargs.pop(key, None)
    if hasattr(component, _HOOK_ATTR):
        delattr(component, _HOOK_ATTR)
