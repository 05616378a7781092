"""One-sided unpaired translation with a patch-wise contrastive loss: CUT and FastCUT (Park, Efros, Zhang, Zhu:
"Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020).

One generator G: A -> B and one discriminator. Instead of a cycle, PatchNCE ties each patch of G(a) to the patch
of `a` at the same place: the encoder features of both images (several layers of G's own encoder) are projected
by a small MLP per layer, and an InfoNCE loss picks the right input patch among `num_patches` of the same image.

Facts taken from the paper's code (taesungp/contrastive-unpaired-translation: models/cut_model.py, patchnce.py,
networks.py PatchSampleF); the code here is our own:
- step order: G forward on A (and B for the identity term), D update on the detached fake (no image pool), then
  the G and F update on GAN + NCE;
- the NCE loss of a pair is the mean over the tapped layers of the mean per-patch cross-entropy, times
  lambda_NCE; with nce_idt, the NCE of (b, G(b)) is averaged with that of (a, G(a));
- patches: the same random positions for every image of the batch, drawn on the input's features and reused for
  the output's; negatives come from the other positions of the same image; the positive's own entry among the
  negatives is set to -10 before dividing by the temperature; the input (key) side is detached;
- MLP head per layer: Linear(C, 256), ReLU, Linear(256, 256), then L2 normalization (x / (|x| + 1e-7)),
  initialized like G (the paper builds it at the first step; here it is sized up front from the generator's
  declared feature channels, so checkpoints and --resume need no first step);
- FastCUT: no identity term, lambda_NCE = 10, and flip equivariance: half of the steps G translates mirrored
  images and the output's features are mirrored back before they are compared.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.api import (AdversarialLoss, Augment, Discriminator, Generator, I2IError, LossSlot, Method, Option,
                    PartFactory, Stepper, hookimpl, init_weights, toml_value)
from i2i_stock.steps import BATCH_CALLS, augmented, batchable, call, set_requires_grad, update_discriminator

#: the similarity given to a positive's own entry among its negatives, before the temperature (the paper's)
MASKED_NEGATIVE = -10.0
_EPS = 1e-7  # the paper's L2 normalization: x / (|x| + 1e-7)
_LAYER_LIST = re.compile(r"^\s*\d+(\s*[,\s]\s*\d+)*\s*$")


def parse_layers(text: str) -> tuple[int, ...] | None:
    """`nce_layers` as numbers, sorted (None for "auto"); I2IError for anything else or a repeated number."""
    if text.strip() == "auto":
        return None
    if not _LAYER_LIST.match(text):
        raise I2IError(f"nce_layers = {toml_value(text)}: expected layer numbers separated by commas or spaces"
                       " (e.g. \"0,4,8,12,16\") or \"auto\" (the generator's default layers)")
    layers = [int(n) for n in re.split(r"[,\s]+", text.strip())]
    if len(set(layers)) != len(layers):
        raise I2IError(f"nce_layers = {toml_value(text)} names a layer twice")
    return tuple(sorted(layers))


def patch_nce_loss(query: Tensor, key: Tensor, images: int, temperature: float) -> Tensor:
    """PatchNCE (InfoNCE over patches) of `query` (images * P, D) against `key` (the same shape), averaged.

    Row p of each image's block of P rows is a patch. Its positive is the key at the same row; its negatives are
    the keys of the other P - 1 patches of the same image (the positive's own entry among them counts as the
    similarity MASKED_NEGATIVE). Features are expected L2-normalized, so the similarities are cosines. Keys are
    detached: only the query side learns. Computed in float32 (the logits are divided by a small temperature).
    """
    dim = query.shape[1]
    q = query.float().view(images, -1, dim)
    k = key.detach().float().view(images, -1, dim)
    patches = q.shape[1]
    similarity = torch.bmm(q, k.transpose(1, 2))  # (images, P, P): query i against key j of the same image
    positive = similarity.diagonal(dim1=1, dim2=2).reshape(-1, 1)
    own = torch.eye(patches, dtype=torch.bool, device=q.device).expand_as(similarity)
    negatives = similarity.masked_fill(own, MASKED_NEGATIVE).reshape(-1, patches)
    logits = torch.cat((positive, negatives), 1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return F.cross_entropy(logits, target)


class PatchHeads(nn.Module):
    """One projection head per tapped layer: Linear(C, width), ReLU, Linear(width, width) (the paper's netF)."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width))
                                  for c in channels)

    def forward(self, index: int, features: Tensor) -> Tensor:
        """Head `index` applied to (rows, C) features, then each row L2-normalized."""
        x = self.mlps[index](features)
        return x / (x.norm(p=2, dim=1, keepdim=True) + _EPS)


def sample_patches(feature: Tensor, count: int, positions: Tensor | None = None,
                   on_device: bool = False) -> tuple[Tensor, Tensor]:
    """Features (N * k, C) at k = min(count, H * W) positions of a (N, C, H, W) map, the same for every image,
    image by image; random positions (torch's global RNG, drawn on the feature's device when `on_device`) unless
    `positions` are given. Returns them too."""
    flat = feature.flatten(2)  # (N, C, H * W)
    if positions is None and on_device:
        positions = torch.randperm(flat.shape[2], device=feature.device)[:count]
    elif positions is None:
        positions = torch.randperm(flat.shape[2])[:count].to(feature.device)
    return flat[:, :, positions].transpose(1, 2).flatten(0, 1), positions


def mirrored(images: Tensor, flip: bool | Tensor) -> Tensor:
    """`images` mirrored left-right where `flip` says so; a tensor `flip` selects without a branch."""
    if isinstance(flip, Tensor):
        return torch.where(flip, images.flip(3), images)
    return images.flip(3) if flip else images


class CutMethod(Method):
    """One-sided unpaired translation A->B with one generator, one discriminator and PatchNCE (CUT, FastCUT)."""

    name = "cut"
    options = (
        Option("nce_layers", str, "auto", "encoder layers PatchNCE compares, as numbers separated by commas or"
               " spaces, or auto: the generator's default (resnet: the paper's 0,4,8,12,16, indices into its"
               " layer sequence; unet, timm_unet: 0 = the input, k = the k-th encoder level)"),
        Option("num_patches", int, 256, "patch positions sampled per layer and image", min=1),
        Option("nce_t", float, 0.07, "temperature of the PatchNCE softmax (> 0)"),
        Option("lambda_nce", float, 1.0, "weight of the PatchNCE loss (1 for CUT, 10 for FastCUT); 0 disables it",
               min=0.0),
        Option("nce_idt", bool, True, "also PatchNCE between b and G(b), averaged with that of a and G(a) (CUT:"
               " true, FastCUT: false)"),
        Option("flip_equivariance", bool, False, "translate mirrored images half the time and compare the output's"
               " features mirrored back (FastCUT: true)"),
        Option("head_channels", int, 256, "width of the MLP projection head of each tapped layer", min=1),
        BATCH_CALLS,
    )
    losses = {
        "adversarial": LossSlot(AdversarialLoss, "lsgan", 1.0, "GAN loss for G/D (lambda_GAN = 1 in CUT)"),
    }
    parts = ("generator", "discriminator", "augment")
    groups = ("G", "D", "F")

    def __init__(self, *, nce_layers: str = "auto", num_patches: int = 256, nce_t: float = 0.07,
                 lambda_nce: float = 1.0, nce_idt: bool = True, flip_equivariance: bool = False,
                 head_channels: int = 256, batch_calls: bool = True) -> None:
        self.requested_layers = parse_layers(nce_layers)
        self.num_patches = num_patches
        self.temperature = nce_t
        self.lambda_nce = lambda_nce
        self.nce_idt = nce_idt
        self.flip_equivariance = flip_equivariance
        self.head_channels = head_channels
        self.batch_calls = batch_calls
        self.on_device = False  # run.capture: random draws on the device, no branch on them

    def prepare_capture(self, device: torch.device) -> None:
        """Draw patch positions on the device, and mirror (FastCUT) by a drawn mask rather than a branch."""
        self.on_device = True

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """nce_layers is a list of numbers or "auto"; the temperature is positive."""
        parse_layers(options["nce_layers"])
        if options["nce_t"] <= 0:
            raise I2IError(f"nce_t = {toml_value(options['nce_t'])} must be greater than 0")

    def build(self, parts: PartFactory) -> None:
        """G (A->B), D (scores domain B), and the projection heads F sized from G's tapped layers."""
        self.G: Generator = parts.generator(in_channels=parts.channels("A"), out_channels=parts.channels("B"))
        self.D: Discriminator = parts.discriminator(in_channels=parts.channels("B"))
        self.gan, self.w_gan = parts.loss("adversarial")
        self.augment: Augment = parts.augment()
        if self.w_gan == 0 and self.lambda_nce == 0:
            raise I2IError("method cut: loss.adversarial.weight and method.lambda_nce are both 0, so nothing trains"
                           " the generator")
        self.layers = self._checked_layers(self.G)
        channels = self.G.feature_channels()
        self.F = PatchHeads([channels[layer] for layer in self.layers], self.head_channels)
        # the paper initializes netF as G (its --init_type / --init_gain)
        options = parts.options_of(self.G)
        init_weights(self.F, options.get("init", "normal"), options.get("init_gain", 0.02))

    def _checked_layers(self, generator: Generator) -> list[int]:
        """The tapped layers: the recipe's, each one the generator has, or the generator's default."""
        try:
            available = generator.feature_channels()
        except I2IError as exc:
            raise I2IError(f"method cut compares the generator's encoder features: {exc}; use a generator that"
                           " exposes them (resnet, unet, timm_unet)") from None
        layers = self.requested_layers or tuple(generator.default_feature_layers())
        if not layers:
            raise I2IError(f"method.nce_layers: generator {generator.name!r} gives no default layers; name some")
        missing = [layer for layer in layers if layer not in available]
        if missing:
            raise I2IError(f"method.nce_layers: generator {generator.name!r} has no encoder layer"
                           f" {', '.join(map(str, missing))}; its layers are {_ranges(sorted(available))}"
                           f" (default: {', '.join(map(str, generator.default_feature_layers()))}, nce_layers ="
                           " \"auto\")")
        return list(layers)

    def augments(self) -> dict[str, Augment]:
        """D's augment, when active."""
        return {"D": self.augment} if self.augment.active else {}

    def networks(self) -> dict[str, nn.Module]:
        """G, D and the heads F, as the paper's code names them."""
        return {"G": self.G, "D": self.D, "F": self.F}

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """One optimizer each for G, D and F (the paper's three Adams; G and F step together)."""
        return {"G": list(self.G.parameters()), "D": list(self.D.parameters()), "F": list(self.F.parameters())}

    def generator_for(self, direction: str) -> Generator:
        """G translates A to B; CUT learns no way back, so BtoA is a KeyError."""
        return {"AtoB": self.G}[direction]

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:
        """G forward, D update on real vs fake (halved), then G and F update on GAN + PatchNCE."""
        real_A, real_B = batch["A"], batch["B"]
        flipped = self._draw_flip(real_A.device)
        with optim.autocast():
            inputs = [real_A, real_B] if self.nce_idt else [real_A]
            inputs = [mirrored(x, flipped) for x in inputs]
            outputs = call(self.G, *inputs, batched=self.batch_calls)
        fake_B = outputs[0]

        losses = update_discriminator(self.D, self.gan, real_B, fake_B, optim, batched=self.batch_calls,
                                      augment=self.augment)

        set_requires_grad([self.D], False)
        with optim.autocast():
            terms = []
            if self.w_gan > 0:
                losses["G_GAN"] = self.gan.generator_loss(self.D(augmented(self.augment, fake_B))) * self.w_gan
                terms.append(losses["G_GAN"])
            if self.lambda_nce > 0:
                names = ["NCE", "NCE_Y"][:len(outputs)]
                nce = self._nce([real_A, real_B][:len(outputs)], outputs, flipped)
                losses.update(zip(names, nce))
                terms.append(sum(nce) / len(nce))
            loss_G = sum(terms)
        heads = self.lambda_nce > 0  # without PatchNCE the heads get no gradient
        optim.zero_grad("G")
        if heads:
            optim.zero_grad("F")
        optim.backward(loss_G)
        optim.step("G")
        if heads:
            optim.step("F")
        return {name: value.detach() for name, value in losses.items()}

    def _encode(self, images: list[Tensor]) -> list[list[Tensor]]:
        """G's features at the tapped layers for each batch of `images` (one call when G's norm allows)."""
        if len(images) > 1 and batchable(self.G, self.batch_calls):
            sizes = [x.shape[0] for x in images]
            maps = self.G.encode(torch.cat(images, 0), self.layers)
            return [list(per_image) for per_image in zip(*(m.split(sizes, 0) for m in maps))]
        return [self.G.encode(x, self.layers) for x in images]

    def _draw_flip(self, device: torch.device) -> bool | Tensor:
        """Whether G sees mirrored images this step (FastCUT, half of the steps): a bool, or a 0-dim bool tensor
        on the device when capture-ready (drawn from the device's generator)."""
        if not self.flip_equivariance:
            return False
        if self.on_device:
            return torch.rand((), device=device) < 0.5
        return bool(torch.rand(()) < 0.5)

    def _nce(self, sources: list[Tensor], outputs: list[Tensor], flipped: bool | Tensor) -> list[Tensor]:
        """lambda_nce * PatchNCE of each output against its source, averaged over the tapped layers."""
        queries = self._encode(outputs)
        with torch.no_grad():  # the keys are detached in the loss, so no graph is needed for them
            keys = self._encode(sources)
        out = []
        for source, query_maps, key_maps in zip(sources, queries, keys):
            total = 0.0
            for index, (q_map, k_map) in enumerate(zip(query_maps, key_maps)):
                # G saw the mirrored image: mirror its features back onto the source's positions
                q_map = mirrored(q_map, flipped)
                k, positions = sample_patches(k_map, self.num_patches, on_device=self.on_device)
                q, _ = sample_patches(q_map, self.num_patches, positions)
                with torch.no_grad():
                    k = self.F(index, k)
                total = total + patch_nce_loss(self.F(index, q), k, source.shape[0], self.temperature)
            out.append(total / len(self.layers) * self.lambda_nce)
        return out

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """real_A, its translation, real_B and (with the identity term) G(real_B)."""
        real_A, real_B = batch["A"], batch["B"]
        shown = {"real_A": real_A, "fake_B": self.G(real_A), "real_B": real_B}
        if self.nce_idt:
            shown["idt_B"] = self.G(real_B)
        return shown


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] as "0-2, 5"."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@hookimpl
def i2i_methods() -> list[type]:
    """The CUT/FastCUT method."""
    return [CutMethod]
