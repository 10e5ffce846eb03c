"""Fine-tuned weights wherever a profile is named: a profile's ``<agent>.finetuned:`` field or a
run's ``weights`` parameter (``mora … --weights``).

A reference is ``round:<round id>`` (the weights a training round of the store exported),
``store://<key>`` (a checkpoint key), ``latest`` (the newest round that produced weights) or
``base`` (the profile's base weights). :func:`apply_weights` resolves every reference a run
names to a checkpoint key and checks, from provenance alone (nothing is loaded), that the
checkpoint exists, holds fine-tuned weights and was trained on the very model the profile loads
for that agent; any problem is one :class:`MoraError` line before any generation. The agents
then sample with the weights through the loop's own mechanism (``PipelineAgent.with_weights``:
a private copy of the denoiser per checkpoint in the model cache, see agents/base.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime

from pydantic import BaseModel

from agents.base import FinetunedWeights
from agents.registry import AgentSet, agents_for
from configs.schema import WEIGHTS_REF_PATTERN, Profile
from configs.errors import MoraError
from storage import Store, open_store
from storage.inputs import STORE_SCHEME
from storage.keys import key_problem
from tasks.artifacts import read_safetensors

TARGETS = ("text_to_image", "image_to_video")  # the agents the loop fine-tunes
_ROLE_TARGETS = {"TextToImageAgent": "text_to_image", "ImageToVideoAgent": "image_to_video"}


class Checkpoint(BaseModel, frozen=True):
    """What provenance says of a fine-tuned weights file (and the round that exported it)."""

    key: str
    target: str
    model: str
    created_at: datetime
    step: int | None = None
    round_id: str | None = None
    loss: float | None = None
    held_out: float | None = None


def finetuned(store_url: str, key: str) -> FinetunedWeights:
    """The weights at ``key`` of the store, fetched when an agent first samples with them."""
    from agents.finetune import load_weights

    return FinetunedWeights(key, lambda: read_safetensors(open_store(store_url), key, load_weights))


def round_reports(store: Store) -> list[dict]:
    """Every training round's report in the store, oldest first, each with its ``created_at``."""
    reports = []
    for key in store.list("rounds/"):
        if key.endswith(".json"):
            created = store.read_provenance(key).created_at
            reports.append({**json.loads(store.get_bytes(key)), "created_at": created})
    return sorted(reports, key=lambda r: r["created_at"])


def resolve(store: Store, ref: str) -> str | None:
    """The checkpoint key ``ref`` names in ``store`` (None: ``base``)."""
    if not isinstance(ref, str) or not re.fullmatch(WEIGHTS_REF_PATTERN, ref):
        raise MoraError(f"weights must be round:<round id>, store://<key>, latest or base, "
                        f"got {ref!r}")
    if ref == "base":
        return None
    if ref.startswith(STORE_SCHEME):
        key = ref[len(STORE_SCHEME):]
        if (problem := key_problem(key)) is not None:
            raise MoraError(f"weights {ref}: {problem}")
        return key
    with_weights = [r for r in round_reports(store) if r.get("weights_key")]
    if ref == "latest":
        if not with_weights:
            raise MoraError(f"no trained weights in store {store.url}: run `mora train` first")
        return with_weights[-1]["weights_key"]
    round_id = ref.removeprefix("round:")
    named = [r for r in round_reports(store) if r.get("round_id") == round_id]
    if not named:
        known = sorted({r["round_id"] for r in with_weights})
        raise MoraError(f"no training round '{round_id}' in store {store.url}"
                        + (f" (rounds with weights: {', '.join(known)})" if known else ""))
    if not named[-1].get("weights_key"):
        raise MoraError(f"training round '{round_id}' produced no weights (it accepted nothing)")
    return named[-1]["weights_key"]


def describe(store: Store, key: str) -> Checkpoint:
    """The checkpoint at ``key``: which agent and model its weights are for (provenance only)."""
    if not store.exists(key):
        raise MoraError(f"no checkpoint store://{key} in store {store.url}")
    prov = store.read_provenance(key)
    stage = prov.params.get("stage")
    if prov.kind != "checkpoint" or stage not in ("weights", "train-state"):
        raise MoraError(f"store://{key} is not fine-tuned weights (it is a {prov.kind} "
                        f"artifact)")
    if stage == "train-state":
        raise MoraError(f"store://{key} is a training state, not the weights sampling loads: name "
                        f"its round (round:<id>) or the round's weights key")
    models = prov.models
    if not models and prov.parents:  # weights exported before they recorded their model
        models = store.read_provenance(prov.parents[-1]).models
    if not models:
        raise MoraError(f"store://{key} does not record which model it was trained on")
    target = prov.params.get("target") or _ROLE_TARGETS.get(models[0].role or "")
    if target not in TARGETS:
        raise MoraError(f"store://{key} does not record which agent it was trained for")
    return Checkpoint(key=key, target=target, model=models[0].id, created_at=prov.created_at,
                      step=prov.params.get("step"))


def check_fits(profile: Profile, role: str, ckpt: Checkpoint) -> None:
    """``ckpt`` holds weights for ``profile``'s ``role`` agent's model (not another model's)."""
    if role != ckpt.target:
        raise MoraError(f"checkpoint store://{ckpt.key} holds {ckpt.target.replace('_', '-')} "
                        f"weights, not {role.replace('_', '-')} weights")
    spec = getattr(profile, role)
    if spec.model != ckpt.model:
        raise MoraError(f"checkpoint store://{ckpt.key} holds weights of {ckpt.model} "
                        f"({ckpt.target.replace('_', '-')}), but profile '{profile.name}' loads "
                        f"{spec.model} there: another model's weights")


def target_of(role: str | None) -> str | None:
    """The agent (``text_to_image``/``image_to_video``) a model ref's ``role`` names, if any."""
    return _ROLE_TARGETS.get(role or "")


def trained_together(store: Store, key: str) -> list[str]:
    """``key`` and the weights of the agents trained together with it (one training step for
    all, see agents/finetune/train.py): they are used together, each by its own agent."""
    if not store.exists(key):
        return [key]  # describe() says what is wrong
    return [key, *store.read_provenance(key).params.get("trained_with", [])]


def with_checkpoints(profile: Profile, store: Store, key: str) -> Profile:
    """``profile`` sampling with ``key`` and the weights trained together with it, each checked
    against and given to the agent it was trained for."""
    for each in trained_together(store, key):
        ckpt = describe(store, each)
        check_fits(profile, ckpt.target, ckpt)
        profile = with_checkpoint(profile, ckpt.target, each)
    return profile


def with_checkpoint(profile: Profile, role: str, key: str | None) -> Profile:
    """``profile`` with its ``role`` agent sampling with the checkpoint ``key`` (None: base)."""
    spec = getattr(profile, role)
    finetuned = None if key is None else STORE_SCHEME + key
    return profile.model_copy(update={role: spec.model_copy(update={"finetuned": finetuned})})


def apply_weights(profile: Profile, store_url: str,
                  weights: str | None = None) -> tuple[Profile, tuple[str, ...]]:
    """``profile`` with every weights reference resolved to a checked ``store://<key>``: those
    of its ``finetuned`` fields, then ``weights`` (a run's choice, for the agent its checkpoint
    was trained for; ``base``: every agent on its base weights). Returns the profile and the
    checkpoint keys it samples with."""
    store = open_store(store_url)
    for role in ("image_to_image", "connector"):
        if getattr(profile, role).finetuned not in (None, "base"):
            raise MoraError(f"profile '{profile.name}': {role}.finetuned: only "
                            f"{' and '.join(TARGETS)} are fine-tuned by the training loop")
    for role in TARGETS:
        ref = getattr(profile, role).finetuned
        key = resolve(store, ref) if ref is not None else None
        if key is not None:  # a round of agents trained together: this agent's own weights
            key = next((k for k in trained_together(store, key)
                        if store.exists(k) and describe(store, k).target == role), key)
            check_fits(profile, role, describe(store, key))
        profile = with_checkpoint(profile, role, key)
    if weights is not None:
        key = resolve(store, weights)
        if key is None:
            for role in TARGETS:
                profile = with_checkpoint(profile, role, None)
        else:
            profile = with_checkpoints(profile, store, key)
    keys = tuple(getattr(profile, role).finetuned[len(STORE_SCHEME):] for role in TARGETS
                 if getattr(profile, role).finetuned)
    return profile, keys


def agents_with_weights(profile: Profile, store_url: str) -> AgentSet:
    """The profile's agents, each fine-tuned agent sampling with its ``finetuned`` checkpoint
    (resolve references with :func:`apply_weights` first: ``latest`` moves)."""
    agents = agents_for(profile)
    swaps = {}
    for role in TARGETS:
        ref = getattr(profile, role).finetuned
        key = resolve(open_store(store_url), ref) if ref is not None else None
        if key is not None:
            swaps[role] = getattr(agents, role).with_weights(finetuned(store_url, key))
    return dataclasses.replace(agents, **swaps) if swaps else agents


def sampling_agents(profile: Profile, store_url: str, weights_key: str | None):
    """(text-to-image, image-to-video) agents: the fine-tuned ones sampling with ``weights_key``
    and the weights trained together with it (None: as the profile says), as every SOP samples
    with named weights."""
    if weights_key is not None:
        profile = with_checkpoints(profile, open_store(store_url), weights_key)
    agents = agents_with_weights(profile, store_url)
    return agents.text_to_image, agents.image_to_video


def list_checkpoints(store_url: str) -> list[Checkpoint]:
    """The fine-tuned weights in the store, oldest first, with their round's figures."""
    store = open_store(store_url)
    rounds = {key: r for r in round_reports(store) if r.get("weights_key")
              for key in r.get("weights_keys") or [r["weights_key"]]}
    found = []
    for key in store.list("checkpoints/"):
        if not key.endswith(".safetensors") or \
                store.read_provenance(key).params.get("stage") != "weights":
            continue
        try:
            ckpt = describe(store, key)
        except MoraError:  # e.g. its model is not recorded: not usable by name either
            continue
        report = rounds.get(key)
        if report is not None:
            ckpt = ckpt.model_copy(update={
                "round_id": report["round_id"], "step": report.get("step", ckpt.step),
                "loss": report["losses"][-1] if report.get("losses") else None,
                "held_out": report.get("held_out_after")})
        found.append(ckpt)
    return sorted(found, key=lambda c: c.created_at)
