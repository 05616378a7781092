"""Importing pytorch-CycleGAN-and-pix2pix generator checkpoints (.pth) as i2i generator files (.safetensors).

The .pth is read with `torch.load(weights_only=True)`, which refuses any pickle that would build objects other
than tensors and plain containers, so a malicious file cannot run code. Every installed generator is asked
whether it recognises the state dict's key layout; the first whose built network loads it strictly wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save as safetensors_bytes

from i2i.storage.atomic import atomic_file
from i2i.storage.checkpoint import part_metadata
from i2i.errors import I2IError, first_line
from i2i.contract.registry import Registry, default_registry
from i2i.storage.weights import drop_stale_instance_norm_stats, read_weights

__all__ = ["ConvertResult", "convert", "drop_stale_instance_norm_stats", "options_text"]



@dataclass
class ConvertResult:
    """What `convert` recognised and wrote: the part, the options it inferred and the number of tensors."""

    name: str
    options: dict[str, Any]
    tensors: int
    source: Path
    out: Path


def convert(reference: Path | str, out: Path | str, registry: Registry | None = None) -> ConvertResult:
    """Convert a reference generator checkpoint (.pth) to an i2i generator file (.safetensors) at `out`."""
    source, out = Path(reference).expanduser(), Path(out).expanduser()
    suggestion = source.with_suffix(".safetensors").name
    if out.exists() and out.resolve() == source.resolve():
        raise I2IError(f"--out {out} is the file being converted: choose another name, e.g. {suggestion}")
    if out.is_dir():
        raise I2IError(f"--out {out} is a folder: pass a file name, e.g. {out / suggestion}")
    try:
        state = read_weights(source)
    except I2IError as exc:
        raise I2IError(f"cannot convert {exc}; pass a generator checkpoint such as latest_net_G_A.pth") from None
    registry = registry or default_registry()
    tried = []
    for name in registry.available("generator"):
        cls = registry.info("generator", name).cls
        try:
            options = cls.options_from_state_dict(state)
        except Exception as exc:  # a third-party part's bug must not hide the parts that would recognise it
            tried.append(f"{name}: failed ({type(exc).__name__}: {first_line(exc)})")
            continue
        if options is None:
            tried.append(f"{name}: not its key layout")
            continue
        try:
            net = registry.create("generator", name, **options)
            weights = drop_stale_instance_norm_stats(state, net)
            net.load_state_dict(weights, strict=True)
        except (I2IError, RuntimeError, ValueError, TypeError) as exc:
            tried.append(f"{name} with {options_text(options)}: does not load ({_last_line(exc)})")
            continue
        resolved = registry.resolve_options("generator", name, options)
        metadata = part_metadata("generator", name, resolved, source=source.name)
        tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        with atomic_file(out) as f:
            f.write(safetensors_bytes(tensors, metadata=metadata))
        return ConvertResult(name, options, len(tensors), source, out)
    raise I2IError(f"cannot convert {source}: no installed generator recognises its {len(state)} tensors"
                   f" (first key {next(iter(state), 'none')!r}; tried {'; '.join(tried) or 'none installed'})")


def options_text(options: dict[str, Any]) -> str:
    """Options as `key=value, ...` for messages."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _last_line(exc: BaseException) -> str:
    # load_state_dict's message lists every key; its last line is the most specific.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
