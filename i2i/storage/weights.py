"""Reading weight files without trusting them: safetensors, or torch .pth files with weights_only=True.

`torch.load(weights_only=True)` refuses any pickle that would build objects other than tensors and plain
containers, so a malicious file cannot run code; the refusal becomes one line naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from i2i.errors import I2IError, first_line

# Where training scripts commonly nest the weights inside a saved dict.
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "netG", "generator", "params")
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def read_weights(file: Path | str) -> dict[str, Tensor]:
    """The tensors of a .safetensors file or a torch.save state dict, unwrapped from {"state_dict": ...} and
    DataParallel's `module.`; errors read "<file>: it ..." so callers can say what they were doing."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise I2IError(f"{path}: it {'is a folder' if path.is_dir() else 'does not exist'}")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(path)
        except Exception as exc:  # safetensors raises several types for damaged files
            raise I2IError(f"{path}: it is not a readable safetensors file ({first_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols its safe unpickler may not cover; failures are reported below.
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, ... for bad files
        text = str(exc)
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines()
                           if line.strip() and not line.strip().startswith(_BOILERPLATE)), "")
            detail = detail.removeprefix("WeightsUnpickler error:").strip().rstrip(".")
            raise I2IError(f"{path}: it is not a plain state dict of tensors (refused to unpickle"
                           f" it: {detail or 'it holds objects other than tensors'})") from None
        raise I2IError(f"{path}: it is not a readable PyTorch checkpoint (not a torch.save file,"
                       f" or damaged: {type(exc).__name__}: {first_line(exc)})") from None
    state = _unwrap(loaded)
    if state is None:
        raise I2IError(f"{path}: it is not a plain state dict of tensors (it holds a"
                       f" {type(loaded).__name__}{_keys_hint(loaded)})")
    if state and all(key.startswith("module.") for key in state):  # saved from DataParallel/DDP
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _unwrap(loaded: Any) -> dict[str, Tensor] | None:
    if not isinstance(loaded, dict):
        return None
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if tensors and len(tensors) == len(loaded):
        return tensors
    for key in _WRAPPERS:
        if isinstance(loaded.get(key), dict) and (inner := _unwrap(loaded[key])):
            return inner
    nested = [inner for v in loaded.values() if isinstance(v, dict) and (inner := _unwrap(v))]
    return nested[0] if len(nested) == 1 else None


def _keys_hint(loaded: Any) -> str:
    if isinstance(loaded, dict):
        keys = [str(k) for k in list(loaded)[:5]]
        return f" with keys {', '.join(keys)}{', ...' if len(loaded) > 5 else ''}" if keys else " that is empty"
    return ""


def drop_stale_instance_norm_stats(state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """`state` without the running stats that checkpoints from PyTorch < 0.4 hold for instance norms.

    Follows the reference's `__patch_instance_norm_state_dict`: running_mean/running_var of an InstanceNorm
    that tracks none, and its num_batches_tracked, are dropped; everything else is kept.
    """
    kept = {}
    for key, value in state.items():
        *path, leaf = key.split(".")
        module: Any = net
        for name in path:
            module = getattr(module, name, None)
            if module is None:
                break
        is_instance_norm = isinstance(module, nn.modules.instancenorm._InstanceNorm)
        if is_instance_norm and (leaf == "num_batches_tracked"
                                 or (leaf in ("running_mean", "running_var") and getattr(module, leaf) is None)):
            continue
        kept[key] = value
    return kept
