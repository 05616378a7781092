"""Checkpoints: safetensors files in a step folder that appears under its final name only when complete.

Each checkpoint's training.json records the SHA-256 of every file in the folder (and of its own content), and
the readers here verify them, so a damaged or altered file is named instead of silently loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from i2i.errors import I2IError
from i2i.storage.atomic import process_alive

STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "training.json"
TRAINING_STEM = "training"  # training.safetensors: the tensors of the training state
CHECKSUMS = "sha256"  # the key in training.json: {file name: hex digest}, STATE_FILE's own entry included
# Leftovers of interrupted saves, copies and prunes: .step-NNNNNNNN.tmp-<pid>, .best.tmp-<pid>, .NAME.deleting, and
# .NAME.replaced (a complete checkpoint moved aside for the instant its copy's replacement is renamed in)
_TEMP_DIR = re.compile(r"^\.([\w-]+)\.(?:tmp-(\d+)|deleting|(replaced))$")


def step_name(step: int) -> str:
    """The folder name of the checkpoint at `step`."""
    return f"step-{step:08d}"


# -- the metadata of a network file: this module alone spells its keys ----------------------------------------

KIND_KEY = "i2i.kind"
NAME_KEY = "i2i.name"
OPTIONS_KEY = "i2i.options"  # JSON of the resolved options
#: generator-file metadata: the i2i.data.values.ValueMap (JSON) of its input ("A") and output ("B") pixel values; absent
#: for the 8-bit RGB pipeline
VALUES_KEY = "i2i.values"
#: a generator conditioned on the target domain (StarGAN's) records the domains its code covers, in order (JSON list)
DOMAINS_KEY = "i2i.domains"
SOURCE_KEY = "i2i.source"  # the file `i2i convert` read the weights from
#: the distribution that provided the part, and its version, so a reader without it can name what to install; absent
#: in files written before they were recorded, and for parts a script registered
PACKAGE_KEY = "i2i.package"
PACKAGE_VERSION_KEY = "i2i.package_version"


def part_metadata(kind: str, name: str, options: dict[str, Any], *, values: str | None = None,
                  source: str | None = None, package: str = "", version: str = "",
                  domains: list[str] | None = None) -> dict[str, str]:
    """safetensors metadata that lets a network be rebuilt from its file alone (`values`: a ValueMap's JSON;
    `source`: the file converted weights came from; `package`, `version`: the distribution that provided the
    part; `domains`: the target domains of a conditioned generator, in the order of its code)."""
    meta = {KIND_KEY: kind, NAME_KEY: name, OPTIONS_KEY: json.dumps(options, sort_keys=True)}
    if domains is not None:
        meta[DOMAINS_KEY] = json.dumps(list(domains))
    if values is not None:
        meta[VALUES_KEY] = values
    if source is not None:
        meta[SOURCE_KEY] = source
    if package:
        meta[PACKAGE_KEY] = package
        if version:
            meta[PACKAGE_VERSION_KEY] = version
    return meta


@dataclass(frozen=True)
class PartMetadata:
    """What a network file records of the part it holds."""

    kind: str
    name: str
    options: dict[str, Any]
    values: str | None  # the ValueMap JSON of a generator of data other than 8-bit RGB, else None
    package: str = ""  # the distribution that provided the part ("" when the file does not record it)
    version: str = ""  # that distribution's version ("" when not recorded)
    domains: tuple[str, ...] = ()  # a conditioned generator's target domains, in the order of its code


def read_part_metadata(file: Path, role: str = "network") -> PartMetadata | None:
    """The part a network file records (None when it has no i2i metadata); I2IError for an unreadable file or
    damaged options (naming the file as a `role` file)."""
    try:
        with safe_open(file, framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise I2IError(f"cannot read {role} file {file} (expected a .safetensors file): {exc}") from None
    if NAME_KEY not in meta:
        return None
    try:
        options = json.loads(meta.get(OPTIONS_KEY, "{}"))
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise I2IError(f"{file} has damaged {OPTIONS_KEY} metadata: {meta.get(OPTIONS_KEY)!r}")
    try:
        domains = tuple(json.loads(meta.get(DOMAINS_KEY, "[]")))
    except ValueError:
        raise I2IError(f"{file} has damaged {DOMAINS_KEY} metadata: {meta.get(DOMAINS_KEY)!r}") from None
    return PartMetadata(meta.get(KIND_KEY, "generator"), meta[NAME_KEY], options, meta.get(VALUES_KEY),
                        meta.get(PACKAGE_KEY, ""), meta.get(PACKAGE_VERSION_KEY, ""), domains)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, on disk (fsynced) before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def state_digest(state: dict[str, Any]) -> str:
    """The SHA-256 of a parsed training.json, all but its own checksum, in a canonical form (sorted keys, no
    spaces; Python floats print and parse back exactly), so it is the same before writing and after reading."""
    rest = dict(state)
    if isinstance(rest.get(CHECKSUMS), dict):
        rest[CHECKSUMS] = {k: v for k, v in rest[CHECKSUMS].items() if k != STATE_FILE}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def remove_leftovers(checkpoints: Path) -> None:
    """Delete temp folders of saves and prunes that a crash or kill -9 interrupted (never a live process's)."""
    for entry in checkpoints.iterdir():
        match = _TEMP_DIR.match(entry.name)
        if not match or not entry.is_dir():
            continue
        pid = int(match.group(2)) if match.group(2) else None
        if pid is not None and pid != os.getpid() and process_alive(pid):
            continue
        if match.group(3) and not (checkpoints / match.group(1)).exists():
            os.rename(entry, checkpoints / match.group(1))  # killed between copy_checkpoint's two renames
            continue
        shutil.rmtree(entry, ignore_errors=True)


def save_checkpoint(checkpoints: Path, step: int, networks: dict[str, nn.Module | dict[str, Tensor]],
                    metadata: dict[str, dict[str, str]], tensors: dict[str, torch.Tensor],
                    state: dict[str, Any]) -> Path:
    """Write networks (a module or its tensors, one .safetensors each, by file stem), extra training tensors and a
    JSON state with the SHA-256 of every file; atomically. A failed write (e.g. a full disk) removes its partial files and raises I2IError."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    remove_leftovers(checkpoints)
    final = checkpoints / step_name(step)
    tmp = checkpoints / f".{step_name(step)}.tmp-{os.getpid()}"
    files: list[tuple[str, nn.Module | dict[str, torch.Tensor], dict[str, str] | None]] = [
        (f"{name}.safetensors", net, metadata.get(name)) for name, net in networks.items()]
    files.append((f"{TRAINING_STEM}.safetensors", tensors, None))
    sums: dict[str, str] = {}
    try:
        tmp.mkdir()
        for name, source, meta in files:  # serialized one by one: one file's bytes in memory at a time
            values = source.state_dict() if isinstance(source, nn.Module) else source
            data = save({k: v.detach().contiguous().cpu() for k, v in values.items()}, metadata=meta)
            sums[name] = hashlib.sha256(data).hexdigest()
            _write(tmp / name, data)
            del data
        # Round-tripped through JSON first, so that the digest sees what a reader parses (e.g. int keys as str).
        state = json.loads(json.dumps({**state, CHECKSUMS: sums}))
        state[CHECKSUMS][STATE_FILE] = state_digest(state)
        _write(tmp / STATE_FILE, json.dumps(state, indent=1, sort_keys=True).encode())
        _fsync(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # also gives back the space a full disk needs
        # Nothing under a final name was touched yet, so the newest complete checkpoint is still whole.
        earlier = list_checkpoints(checkpoints)
        kept = f"the previous checkpoint {earlier[-1]} is intact" if earlier else "no earlier checkpoint exists"
        raise I2IError(f"could not write checkpoint {final}: {exc.strerror or exc}; {kept} (free some space or"
                       " fix the folder, then continue with --resume)") from None
    if final.exists():  # a checkpoint of the same step from an earlier attempt; the new one replaces it
        # renamed first so that a crash mid-delete never leaves a half checkpoint under a valid name
        doomed = final.with_name(f".{final.name}.deleting")
        os.rename(final, doomed)
        shutil.rmtree(doomed)
    os.rename(tmp, final)
    _fsync(checkpoints)
    return final


def copy_checkpoint(source: Path, target: Path) -> Path:
    """Make `target` (e.g. checkpoints/best) a copy of the checkpoint folder `source`, atomically: copied into a
    temporary folder beside it, fsynced, then renamed over it, so a crash leaves the previous `target` whole."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(parent)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        for file in sorted(source.iterdir()):
            if file.name != STATE_FILE:
                shutil.copyfile(file, tmp / file.name)
                _fsync(tmp / file.name)
        # training.json last, as in save_checkpoint: a folder without one is never taken for a checkpoint
        shutil.copyfile(source / STATE_FILE, tmp / STATE_FILE)
        _fsync(tmp / STATE_FILE)
        _fsync(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous {target.name} is intact" if target.exists() else f"there is no {target.name} yet"
        raise I2IError(f"could not copy checkpoint {source} to {target}: {exc.strerror or exc}; {kept}") from None
    # A folder cannot be renamed over a non-empty one: the old one steps aside first, and a crash between the two
    # renames is undone by remove_leftovers (it renames .NAME.replaced back when NAME is missing).
    aside = parent / f".{target.name}.replaced"
    if target.exists():
        os.rename(target, aside)
    os.rename(tmp, target)
    _fsync(parent)
    shutil.rmtree(aside, ignore_errors=True)
    return target


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing, truncated, damaged or altered file is named in the error.

    A file inside a checkpoint folder is checked against the SHA-256 its training.json records (checkpoints of
    older versions record none).
    """
    file = Path(file)
    expected = _recorded_checksum(file)
    try:
        if expected is not None:
            with open(file, "rb") as f:
                found = hashlib.file_digest(f, "sha256").hexdigest()
            if found != expected:
                raise I2IError(f"cannot read checkpoint file {file}: its SHA-256 differs from the one"
                               f" {file.parent / STATE_FILE} records (the file is damaged or was changed)")
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as exc:
        raise I2IError(f"cannot read checkpoint file {file}: {exc}") from None


def _recorded_checksum(file: Path) -> str | None:
    """The SHA-256 the checkpoint folder holding `file` records for it; None outside checkpoints or before
    checksums were recorded."""
    if file.name == STATE_FILE or not (file.parent / STATE_FILE).is_file():
        return None
    sums = read_training_json(file.parent).get(CHECKSUMS)
    return sums.get(file.name) if isinstance(sums, dict) else None


def read_training_json(folder: Path) -> dict[str, Any]:
    """A checkpoint folder's training.json, checked against its recorded SHA-256 when it has one."""
    path = Path(folder) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise I2IError(f"cannot read checkpoint file {path}: {exc}") from None
    if not isinstance(state, dict):
        raise I2IError(f"cannot read checkpoint file {path}: it holds no JSON object")
    sums = state.get(CHECKSUMS)
    if isinstance(sums, dict) and STATE_FILE in sums and sums[STATE_FILE] != state_digest(state):
        raise I2IError(f"cannot read checkpoint file {path}: its content differs from its recorded SHA-256 (the"
                       " file is damaged or was changed)")
    if CHECKSUMS in state and not isinstance(sums, dict):
        raise I2IError(f"cannot read checkpoint file {path}: its {CHECKSUMS!r} entry is not a table")
    return state


def first_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """The first key (in sorted order) that is missing, unexpected or of another shape, described; else None."""
    for key in sorted(set(expected) | set(found)):
        if key not in found:
            return f"key {key!r} is missing from the checkpoint"
        if key not in expected:
            return f"key {key!r} in the checkpoint does not exist in the network"
        if expected[key].shape != found[key].shape:
            return (f"key {key!r} has shape {tuple(expected[key].shape)} in the network but"
                    f" {tuple(found[key].shape)} in the checkpoint")
    return None


def load_network(file: Path, net: nn.Module) -> None:
    """Load a network's weights from `file`; a damaged or mismatched file is named in the error."""
    weights = read_tensors(file)
    mismatch = first_mismatch(net.state_dict(), weights)
    if mismatch:
        raise I2IError(f"{file} does not fit the network: {mismatch}")
    net.load_state_dict(weights)


def network_file(folder: Path, stem: str) -> Path:
    """The file of network (or variant) `stem` in a checkpoint folder, e.g. G_A.safetensors, G_A.ema.safetensors."""
    return Path(folder) / f"{stem}.safetensors"


def variant_stem(network: str, variant: str) -> str:
    """The file stem of a network's variant, e.g. "G_A.ema"."""
    return f"{network}.{variant}"


def read_training_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder's training state (training.safetensors), checksum verified."""
    return read_tensors(network_file(folder, TRAINING_STEM))


def prune_checkpoints(checkpoints: Path, keep: int, protect: set[int]) -> list[Path]:
    """Delete all but the `keep` newest checkpoints, never those at the steps in `protect`; 0 keeps all."""
    if keep <= 0:
        return []
    candidates = [p for p in list_checkpoints(checkpoints) if int(p.name[5:]) not in protect]
    doomed = candidates[:-keep]
    for folder in doomed:
        # renamed first so that a crash mid-delete never leaves a half checkpoint under a valid name; a crash
        # after that leaves a .deleting folder, which the next save removes
        trash = folder.with_name(f".{folder.name}.deleting")
        os.rename(folder, trash)
        shutil.rmtree(trash)
    return doomed


# -- the state of every stateful piece, as tensors plus JSON --------------------------------------------------

_TENSOR = "__tensor__"  # {"__tensor__": name}: a tensor stored in training.safetensors under that name
_ITEMS = "__items__"  # {"__items__": [[key, value], ...]}: a dict whose keys are not all strings (e.g. int)
_TUPLE = "__tuple__"


def flatten_state(prefix: str, value: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """A state (tensors, JSON values, and dicts, lists and tuples of them) as named tensors plus a JSON tree.

    Tensors are named `prefix.<path>` (e.g. optim.G.state.0.exp_avg); every stateful piece of a run (optimizers,
    schedule, buffers, callbacks, RNGs, the loop) goes through here, so checkpoint.py alone knows the layout.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            if path in tensors:
                raise ValueError(f"two tensors of the state would be named {path!r}")
            tensors[path] = node.detach()
            return {_TENSOR: path}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
            return {_ITEMS: [[k, walk(v, f"{path}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"{path}: a checkpoint holds tensors, numbers, strings, None, and dicts, lists and tuples of"
                        f" them, not {type(node).__name__}")

    return tensors, walk(value, prefix)


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten_state` (tensors come back on the CPU)."""
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR}:
            return tensors[tree[_TENSOR]]
        if set(tree) == {_ITEMS}:
            return {k: unflatten_state(v, tensors) for k, v in tree[_ITEMS]}
        if set(tree) == {_TUPLE}:
            return tuple(unflatten_state(v, tensors) for v in tree[_TUPLE])
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    return tree


class RandomState:
    """Every RNG a run draws from (Python, NumPy, torch CPU and CUDA), as a stateful piece of the checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        """The generators' states."""
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                             has_gauss, cached],
                 "python": [version, list(internal), gauss]}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = list(torch.cuda.get_rng_state_all())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
