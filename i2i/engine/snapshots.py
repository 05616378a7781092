"""Checkpoints of a training run: the networks' files plus the state of every stateful piece, written and
restored through one generic flattener (i2i.storage.checkpoint), so no piece is listed by hand here or there."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i.storage.checkpoint import (VALUES_KEY, first_mismatch, flatten_state, part_metadata, read_state, read_tensors,
                            save_checkpoint, unflatten_state)
from i2i.engine.placement import tensors_to
from i2i.engine.setup import PartBuilder
from i2i.engine.state import LoopState
from i2i.errors import I2IError
from i2i.contract.parts import Method
from i2i.recipe import Recipe
from i2i.storage.rundir import RunFolder


class Snapshots:
    """Writes and restores the whole training state of a run in its checkpoints/ folder."""

    def __init__(self, folder: RunFolder, recipe: Recipe, method: Method, builder: PartBuilder,
                 device: torch.device) -> None:
        self.folder, self.recipe, self.method, self.builder, self.device = folder, recipe, method, builder, device

    @property
    def networks(self) -> dict[str, nn.Module]:
        """The method's networks by file name."""
        return self.method.networks()

    def save(self, pieces: dict[str, Any], loop: LoopState, processes: int,
             variants: dict[str, dict[str, nn.Module]] | None = None) -> Path:
        """Write the networks (and their `variants`, e.g. {"ema": {"G_A": module}}) and every piece's state as
        checkpoints/step-NNNNNNNN; returns the folder."""
        tensors, trees = {}, {}
        for name, piece in pieces.items():
            flat, trees[name] = flatten_state(name, piece.state_dict())
            tensors.update(flat)
        networks, metadata = dict(self.networks), self._metadata()
        listed: dict[str, dict[str, str]] = {}
        for variant, modules in (variants or {}).items():
            for network, module in modules.items():
                if network not in networks:
                    raise I2IError(f"a callback gave a {variant!r} variant of network {network!r}, which the method"
                                   f" does not have ({', '.join(networks)})")
                stem = f"{network}.{variant}"
                networks[stem] = module
                if network in metadata:
                    metadata[stem] = metadata[network]
                listed.setdefault(variant, {})[network] = stem
        state = {"step": loop.step, "epoch": loop.epoch, "position": loop.position, "processes": processes,
                 "recipe": self.recipe.tables, "generators": self.generator_files(), "variants": listed,
                 "state": trees}
        return save_checkpoint(self.folder.checkpoints_dir, loop.step, networks, metadata, tensors, state)

    def load(self, folder: Path, pieces: dict[str, Any]) -> None:
        """Restore the networks and every piece from a checkpoint folder (all read and checked before any is set)."""
        weights = {name: read_tensors(folder / f"{name}.safetensors") for name in self.networks}
        for name, net in self.networks.items():
            mismatch = first_mismatch(net.state_dict(), weights[name])
            if mismatch:
                raise ModelMismatch(f"{name}: {mismatch}", folder, self._recipe_differences(folder))
        tensors, saved = read_state(folder)
        if "state" not in saved:
            raise I2IError(f"{folder} was written by an earlier i2i, whose training state this one cannot continue"
                           " (its generators still translate, evaluate and export)")
        try:
            states = {}
            for name in pieces:
                if name in saved["state"]:
                    states[name] = unflatten_state(saved["state"][name], tensors)
                elif name.startswith("callback."):
                    warnings.warn(f"{folder.name} holds no state of {name.replace('.', ' ', 1)}: it starts afresh")
                else:
                    raise KeyError(name)
            for name, net in self.networks.items():
                net.load_state_dict(weights[name])
            for name, state in states.items():
                pieces[name].load_state_dict(tensors_to(state, self.device) if name.startswith("buffer.") else state)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise I2IError(f"{folder} is incomplete or from another version: {type(exc).__name__}: {exc}") from None

    def restore_newest(self, pieces: dict[str, Any]) -> Path | None:
        """Load the newest checkpoint that loads; a broken newer one is named in a warning and skipped."""
        found = self.folder.checkpoints()
        if not found:
            warnings.warn(f"--resume: no complete checkpoint in {self.folder.checkpoints_dir}; starting from"
                          " step 0")
            return None
        mismatches = []
        for folder in reversed(found):
            try:
                self.load(folder, pieces)
                return folder
            except ModelMismatch as exc:
                mismatches.append(exc)
                warnings.warn(f"cannot resume from {folder.name}: {exc}")
            except I2IError as exc:
                warnings.warn(f"cannot resume from {folder.name}: {exc}; trying the previous checkpoint")
        if mismatches:
            raise mismatches[0]
        raise I2IError(f"--resume: none of the {len(found)} checkpoints in {self.folder.checkpoints_dir} could be"
                       " loaded (see the warnings above)")

    def _recipe_differences(self, folder: Path) -> list[str]:
        """The model-defining recipe keys that differ between this run and the checkpoint's."""
        try:
            saved = self.folder.read_state(folder)["recipe"]
        except (I2IError, KeyError):
            return []
        out = []
        for table in ("method", "generator", "discriminator"):
            mine, theirs = self.recipe.tables.get(table, {}), saved.get(table, {})
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    out.append(f"[{table}] {key} = {mine.get(key)!r} here, {theirs.get(key)!r} in the checkpoint")
        return out

    def _metadata(self) -> dict[str, dict[str, str]]:
        meta = {}
        for name, net in self.networks.items():
            if id(net) in self.builder.built:  # a network the method made itself (e.g. CUT's heads) has no part name
                kind, part, options = self.builder.built[id(net)]
                meta[name] = part_metadata(kind, part, options)
        values = self.builder.value_map
        if values is not None:
            # each generator file says how its inputs' and outputs' raw values map to [-1, 1], so translate writes
            # results in the data's own range from the file alone (its "A" is the input side)
            files = self.generator_files()
            for direction, name in files.items():
                if name in meta:
                    oriented = values if direction == "AtoB" else values.swapped()
                    meta[name] = {**meta[name], VALUES_KEY: oriented.to_json()}
        return meta

    def generator_files(self) -> dict[str, str]:
        """Which network file translates in each direction, e.g. {"AtoB": "G_A", "BtoA": "G_B"}."""
        names = {id(net): name for name, net in self.networks.items()}
        return {direction: names[id(net)] for direction, net in self.method.generators().items()
                if id(net) in names}



class ModelMismatch(I2IError):
    """A checkpoint whose networks do not fit the recipe's."""

    def __init__(self, mismatch: str, folder: Path, differences: list[str]) -> None:
        hint = f" (the recipe differs: {'; '.join(differences)})" if differences else ""
        super().__init__(f"the recipe's model differs from checkpoint {folder}: {mismatch}{hint}")
