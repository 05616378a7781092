"""Domains and directions a method declares: which translations it offers and which network serves each.

Two-domain methods (CycleGAN, pix2pix, CUT) translate between "A" and "B" in the directions "AtoB" and "BtoA", each
with a generator of its own. A method of N domains names a generator from one domain to another
"<source>_to_<target>"; one that serves every target with one generator taking the target domain as an input
(StarGAN) names its directions "to_<domain>", each a `ConditionedGenerator` binding the shared network to that
domain's one-hot code, so whatever calls a direction's generator (samples, validation, translate) calls an
image-to-image module either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: the domains and directions of a two-domain method
TWO_DOMAINS = ("A", "B")
TWO_DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}


@dataclass(frozen=True)
class Direction:
    """One translation a method offers: from `source` (None: any of its domains) to `target`, by the network the
    checkpoint file `network` holds, given `condition` (the target's index among the method's domains) when that
    network is conditioned on the target domain, else None."""

    source: str | None
    target: str
    network: str
    condition: int | None = None


def direction_name(target: str, source: str | None = None) -> str:
    """The name of a direction: "to_<target>" from any domain; "<source>_to_<target>" from one domain of N (the two
    domains' are "AtoB" and "BtoA")."""
    if source is None:
        return f"to_{target}"
    return f"{source}to{target}" if (source, target) in TWO_DIRECTIONS.values() else f"{source}_to_{target}"


def route(name: str) -> tuple[str | None, str] | None:
    """(source domain or None for any, target domain) of a direction by its name ("AtoB", "to_<target>",
    "<source>_to_<target>"); None for a name of none of these forms."""
    if name in TWO_DIRECTIONS:
        return TWO_DIRECTIONS[name]
    if name.startswith("to_") and len(name) > 3:
        return None, name[3:]
    source, sep, target = name.partition("_to_")
    return (source, target) if sep and source and target else None


def one_hot(indices: Tensor, count: int, like: Tensor) -> Tensor:
    """(N, count) one-hot codes of domain `indices` (N,), in the dtype and on the device of `like`."""
    return torch.nn.functional.one_hot(indices.long(), count).to(device=like.device, dtype=like.dtype)


def with_condition(images: Tensor, codes: Tensor) -> Tensor:
    """`images` (N, C, H, W) with the domain codes (N, K) appended as K constant channels: the input of a generator
    conditioned on a domain (StarGAN's), built with in_channels = C + K."""
    n, _, h, w = images.shape
    return torch.cat([images, codes.to(images.dtype)[:, :, None, None].expand(n, codes.shape[1], h, w)], 1)


class ConditionedGenerator(nn.Module):
    """A conditioned generator bound to one target domain: maps images to images as any generator does (the domain's
    code is appended to every input), for the callers of a method's directions. It holds no weights of its own:
    `network` is the trained one."""

    def __init__(self, network: nn.Module, index: int, count: int) -> None:
        super().__init__()
        self.network, self.index, self.count = network, index, count
        # the network's declared input sizes and per-sample behaviour, which callers read from a generator
        for name in ("size_multiple", "min_size", "size_options", "batch_independent", "name"):
            if hasattr(network, name):
                setattr(self, name, getattr(network, name))

    def forward(self, images: Tensor) -> Tensor:
        """The network's translation of `images` to this target domain."""
        codes = torch.full((images.shape[0],), self.index, dtype=torch.long, device=images.device)
        return self.network(with_condition(images, one_hot(codes, self.count, images)))


def trained_network(generator: nn.Module) -> nn.Module:
    """The network whose weights a direction's generator uses: the generator itself, or the network a
    `ConditionedGenerator` binds."""
    return generator.network if isinstance(generator, ConditionedGenerator) else generator


def spread(length: int, count: int) -> list[int]:
    """`count` indices spread evenly over `length` items (first and last included): samples of N-domain data,
    whose items come domain by domain, then show several domains."""
    count = min(count, length)
    return [round(i * (length - 1) / max(1, count - 1)) for i in range(count)]
