"""Self-modulated fine-tuning (paper §3.2, Algorithm 1) of an agent's diffusion model.

``finetune(pipe, spec, samples, until_step=n)`` trains the pipeline's denoiser (the SD3/Wan
transformer or the SVD UNet; fully or with LoRA) together with a modulation embedding
(:mod:`agents.modulation`) on the selected samples, and returns a :class:`TrainState` that holds
everything needed to continue exactly where it stopped, so a round can train in
checkpoint-sized chunks (each a cached task): ``finetune(until_step=8)`` gives the same weights
as ``finetune(until_step=4)`` followed by ``finetune(start=state, until_step=8)``.

Several agents train together (``spec.targets``, Algorithm 1) when ``pipe`` is a ``{target:
pipeline}`` mapping: one optimizer step over every agent's weights and modulation embedding on
the agents' summed loss, each loss weighted by its agent's share of the modulation factors
(:func:`total_loss`). The state then keys each agent's tensors under ``<target>/`` and
:func:`inference_weights` gives one agent's weights at a time.

The pipeline is never modified and keeps its placement: training runs on the profile's device
(``finetune(device=…)``, whatever the pipeline's offload setting) on a new module holding the
denoiser's weights without the pipeline's offload hooks (fp32 copies for full fine-tuning; for
LoRA the frozen base stays in the profile's dtype and only the adapters, the modulation, the
optimizer state and the EMA are fp32), and the frozen parts (VAE, text and image encoders) are
only called under ``no_grad``. The weights sampling uses come from :func:`inference_weights` and
are loaded into a pipeline the caller owns (a fresh ``from_pretrained``, not the process-wide
cache) by :func:`apply_weights`. Checkpoints stream to and from safetensors files
(:func:`save_state`, :func:`load_state`): no whole-file bytes object.

Where it lives: agents/finetune/train.py (the loop), data.py (samples and their seeded batches),
losses.py (each family's loss), trainable.py (training copy, LoRA, optimizer, precision) and
checkpoints.py (states, weights, safetensors).
"""

from agents.finetune.checkpoints import (
    STATE_FORMAT,
    WEIGHTS_FORMAT,
    TrainState,
    agent_targets,
    apply_weights,
    inference_weights,
    load_state,
    load_weights,
    save_state,
    save_weights,
    state_from_bytes,
    state_to_bytes,
    weights_from_bytes,
    weights_to_bytes,
)
from agents.finetune.data import TrainingSample
from agents.finetune.train import finetune, loss_weights, total_loss
from agents.finetune.trainable import autocast_dtype

__all__ = [
    "STATE_FORMAT", "WEIGHTS_FORMAT", "TrainState", "TrainingSample", "agent_targets",
    "apply_weights", "autocast_dtype", "finetune", "inference_weights", "load_state",
    "load_weights", "loss_weights", "save_state", "save_weights", "state_from_bytes",
    "state_to_bytes", "total_loss", "weights_from_bytes", "weights_to_bytes",
]
