"""At sampling time: the modulation appended to every call of the denoiser by a forward pre-hook."""

from __future__ import annotations

import inspect

import torch

from agents.modulation.embedding import ModulationEmbedding

_HOOK_ATTR = "_mora_modulation_hook"



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
