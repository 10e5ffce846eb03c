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

Where it lives: agents/modulation/families.py (families, denoisers, widths), embedding.py
(:class:`ModulationEmbedding` and its ``create``), initialisation.py (special-token and random
inits) and hook.py (the sampling-time hook).
"""

from agents.modulation.embedding import MODES, ModulationEmbedding
from agents.modulation.families import (
    FAMILIES,
    conditioning_width,
    denoiser_of,
    device_of,
    family_of,
    layout_of,
)
from agents.modulation.hook import install, installed, strip_hooks, uninstall
from agents.modulation.initialisation import (
    REFERENCE_PROMPT,
    SD3_T5_LENGTH,
    WAN_TEXT_LENGTH,
    encode_special_token,
    special_token_states,
    typical_norm,
)

__all__ = [
    "FAMILIES", "MODES", "REFERENCE_PROMPT", "SD3_T5_LENGTH", "WAN_TEXT_LENGTH",
    "ModulationEmbedding", "conditioning_width", "denoiser_of", "device_of",
    "encode_special_token", "family_of", "install", "installed", "layout_of",
    "special_token_states", "strip_hooks", "typical_norm", "uninstall",
]
