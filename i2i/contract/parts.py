"""The interfaces every part implements: Generator, Discriminator, Loss, Buffer, Augment, Dataset, Method, and
the training loop's plugins: Optimizer, Schedule and Callback.

The core trains against these classes only; concrete parts live in plugins and reach the core through the
`i2i` entry-point group (see hookspecs.py). Each part class declares a `name` (used in recipes), its
`options` (checked before anything is built) and a docstring whose first line is its description.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from i2i.contract.domains import (TWO_DIRECTIONS, TWO_DOMAINS, ConditionedGenerator, Direction, route,
                                  trained_network)
from i2i.contract.options import Option
from i2i.errors import I2IError

if TYPE_CHECKING:
    from i2i.data.values import ValueMap

class Part:
    """Base of every part: a recipe name, declared options and a description.

    A kind of part is a subclass that sets `kind`, declared by returning it from the hook i2i_kinds (the core's from
    i2i/contract/kinds.py); a part's kind is the `kind` of the nearest class in its MRO that sets one.
    """

    kind: ClassVar[str] = ""
    #: the core kinds' own hook (in hookspecs.py) returning their classes, beside i2i_parts, which takes any kind
    hook: ClassVar[str] = ""
    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Check resolved options beyond what each Option checks alone; raise I2IError saying what to fix.

        The registry calls it whenever it resolves a recipe table (with every option, defaults filled in), so
        a value that only the part can judge (a model name, a file, one option against another) fails with
        one line before anything is built or written. The message names the option (e.g. `level = 7 ...`);
        the registry puts the table in front.
        """

    def prepare_capture(self, device: torch.device) -> None:
        """Make this part's work in a training step capture-ready, once, before the first step of a run with
        `run.capture = true` (the engine calls it on the method and on every part the method built).

        A captured step is recorded once and replayed as a CUDA graph: Python code inside `Method.step` runs only
        while it is recorded, and the host must not read tensor values there (`.item()`, `bool(t)`, `float(t)`,
        `.tolist()`, `.cpu()`). So a part that keeps per-step state, draws random numbers or takes branches on
        them switches here to doing that on `device` with tensor operations (`torch.where` instead of `if`). On
        the CPU the same capture-ready code runs eagerly; the engine counts host reads in the first step and
        refuses the run naming the line where one happens. The default does nothing (for parts whose step is
        tensor operations only)."""


class Generator(Part, nn.Module):
    """Maps a batch of images (N, C, H, W) in [-1, 1] to translated images of the same size.

    The input sizes it takes are declared, so a crop it cannot take is refused before training (naming
    `data.crop_size` and the smallest size that works) rather than by torch mid-step: `size_multiple` (sides must
    divide by it) and `min_size` (the smallest side it takes in training, with a batch of one); set them on the
    instance where options decide them, and list those options in `size_options` so the message names them.
    """

    kind = "generator"
    hook = "i2i_generators"
    #: input height and width must be multiples of this (2 ** number of downsamplings)
    size_multiple: int = 1
    #: the smallest input height and width it takes in training, batch of one included (e.g. 2 ** downs for a
    #: U-Net, whose innermost level is 1x1); a multiple of `size_multiple` is not required
    min_size: int = 1
    #: the options that set `size_multiple` and `min_size` (e.g. ("downs",)), named when a crop does not fit
    size_options: ClassVar[tuple[str, ...]] = ()
    #: True when each output depends on its own input only (instance norm or none), so calls may be batched
    batch_independent: bool = True

    @classmethod
    def options_from_state_dict(cls, state: dict[str, Tensor]) -> dict[str, Any] | None:
        """Options that rebuild this generator for a state dict with its key layout, or None if not its layout.

        `i2i convert` asks every installed generator, so a part that keeps the reference code's layout can
        import the reference's published weights.
        """
        return None

    # -- encoder features, for methods that compare them (CUT's PatchNCE) ----------------------------------
    # A generator that implements `feature_channels` and `encode` can be used by such methods; one that does not
    # gets a clear error from them. Layers are numbered by the generator (documented in its docstring), shallow
    # to deep; 0 is conventionally the input image (or, for the ResNet, its padded copy).

    def feature_channels(self) -> dict[int, int]:
        """The encoder layers `encode` can tap, shallow to deep, each mapped to its feature map's channel count.

        Methods size their per-layer heads from it before the first step and check a recipe's layer list
        against it. The default raises I2IError: the generator does not expose its encoder.
        """
        raise I2IError(f"generator {self.name!r} does not expose its encoder features (Generator.feature_channels"
                       " and encode), which a method that compares them (e.g. cut) needs")

    def default_feature_layers(self) -> tuple[int, ...]:
        """The layers a method taps when the recipe leaves the choice to the generator: by default all of them."""
        return tuple(self.feature_channels())

    def encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """The feature maps (N, C, H', W') of `images` at encoder `layers` (keys of `feature_channels`), in the
        order given; differentiable, and only as much of the network is run as the deepest layer needs."""
        self.feature_channels()  # raises the error above for a generator that does not implement the interface
        raise NotImplementedError(f"generator {self.name!r} declares feature_channels but not encode")

    # -- tiled translation of large images (`i2i translate --tile`) ------------------------------------------

    def tile_norms(self) -> list[nn.Module] | None:
        """Every module of this generator that normalizes with statistics of the image it is given, in forward
        order, or None when it cannot say (the default).

        Tiled translation runs an image in pieces; instance norm would then take each tile's own mean and
        variance, and neighbouring tiles would come out in different colours. The modules listed here get the
        whole image's statistics instead (`--norm-stats image` or `thumbnail`): each must be an
        `nn.InstanceNorm2d` (per image and channel, over height and width). Return [] for a generator without
        such layers (batch norm in eval mode needs nothing); `instance_norms(self)` (i2i.api) lists a network's
        instance norms, and is right unless some normalization happens outside modules (F.instance_norm,
        GroupNorm), which cannot be given other statistics: then return None, and tiles keep their own.
        """
        return None


class Discriminator(Part, nn.Module):
    """Scores a batch of images; returns raw (pre-activation) scores, one per image or per patch.

    It declares the input sizes it takes as a generator does (`size_multiple`, `min_size`, `size_options`): it
    scores images of the crop size, so a crop too small for its downsamplings is refused before training.

    A discriminator may also classify an image's domain (StarGAN's auxiliary classifier): it then declares an int
    option `classes` (0 = no classifier, its default) and, built with `classes` = K > 0, offers
    `scores_and_logits(x) -> (scores, logits)`: the scores `forward(x)` gives and (N, K) domain logits, its shared
    layers run once. A method that needs the classifier builds its discriminator with ``classes=K`` (K = the
    number of domains) and calls `scores_and_logits`; `forward` stays the scores alone.
    """

    kind = "discriminator"
    hook = "i2i_discriminators"
    #: input height and width must be multiples of this (1: any side of at least `min_size`)
    size_multiple: int = 1
    #: the smallest input height and width it takes in training, batch of one included (a PatchGAN of n layers:
    #: 3 * 2 ** n, so that its last two convs still have a patch to score)
    min_size: int = 1
    #: the options that set `size_multiple` and `min_size` (e.g. ("layers",)), named when a crop does not fit
    size_options: ClassVar[tuple[str, ...]] = ()
    batch_independent: bool = True

    def features(self, images: Tensor) -> list[Tensor]:
        """Intermediate activations for `images`, shallow to deep (for feature-matching losses)."""
        from i2i.errors import I2IError

        raise I2IError(f"discriminator {self.name!r} does not expose intermediate features, which feature"
                       " matching needs: set its loss weight to 0 or use a discriminator that does (e.g. patchgan)")


def declared_sizes(part: Any) -> tuple[int, int]:
    """The (size_multiple, min_size) a network declares (1, 1 for one that declares neither)."""
    return max(1, int(getattr(part, "size_multiple", 1))), max(1, int(getattr(part, "min_size", 1)))


def takes_side(part: Any, side: int) -> bool:
    """Whether `part` declares that it takes images of `side` x `side` px."""
    multiple, least = declared_sizes(part)
    return side >= least and side % multiple == 0


def fitting_side(parts: Iterable[Any], at_least: int = 1) -> int:
    """The smallest side of at least `at_least` px that every one of `parts` declares it takes."""
    multiple, least = 1, at_least
    for part in parts:
        part_multiple, part_least = declared_sizes(part)
        multiple, least = math.lcm(multiple, part_multiple), max(least, part_least)
    return multiple * math.ceil(least / multiple)


class Loss(Part, nn.Module):
    """Base of all losses; a loss is one of the two roles below."""

    kind = "loss"
    hook = "i2i_losses"


#: R1 (Mescheder et al. 2018), options of every adversarial loss; a subclass with options of its own lists these
#: among them (``options = (*AdversarialLoss.options, ...)``) and passes them to ``super().__init__``
R1_OPTIONS = (
    Option("r1_weight", float, 0.0, "R1 penalty gamma: gamma/2 * mean ||grad D(real)||^2 added to D's loss, at the"
           " images D sees (augmented, when an augment is set); 0 disables it", min=0.0),
    Option("r1_every", int, 1, "compute R1 every k-th discriminator update only, times k (lazy regularization,"
           " StyleGAN2)", min=1),
)


class AdversarialLoss(Loss):
    """Scores discriminator predictions against the real or the fake target (for D and for G).

    `forward(prediction, target_is_real)` is the discriminator's objective; `generator_loss(prediction)` the
    generator's, which by default is the same as the real target's. `penalty` adds extra terms to D's loss: here
    R1, the zero-centred gradient penalty on real images, when `r1_weight` is set.
    """

    role: ClassVar[str] = "adversarial"
    options = R1_OPTIONS
    #: the raw score at which the discriminator is undecided between real and fake (0 for logits, 0.5 for
    #: LSGAN's 0/1 targets); adaptive augmentation measures overfitting as the share of real scores above it
    threshold: ClassVar[float] = 0.0

    def __init__(self, *, r1_weight: float = 0.0, r1_every: int = 1) -> None:
        super().__init__()
        self.r1_weight, self.r1_every = r1_weight, r1_every
        if r1_weight > 0 and r1_every > 1:
            # which update is due depends on how many came before: a buffer, so checkpoints keep it (the trainer
            # saves every loss's buffers); only here, so checkpoints without lazy R1 hold no loss state
            self.register_buffer("r1_rounds", torch.zeros((), dtype=torch.int64))
        self._r1_seen: set[int] = set()  # the discriminators penalized in the current round
        self._r1_fresh = True  # the next call starts a round (at the start, and after loading a checkpoint)
        self._r1_masked = False  # run.capture: lazy R1 computed at every update, weighted 0 where not due
        self.register_load_state_dict_post_hook(AdversarialLoss._start_a_round)

    def prepare_capture(self, device: torch.device) -> None:
        """Lazy R1 in a captured step: a replay cannot skip the penalty, so it is computed at every update and
        multiplied by whether this one is due (the same loss; the saving of lazy R1 is lost)."""
        self._r1_masked = True

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:  # pragma: no cover - interface
        """The discriminator's loss of raw scores `prediction` against the real or the fake target."""
        raise NotImplementedError

    def generator_loss(self, prediction: Tensor) -> Tensor:
        """The generator's loss of D's raw scores on its fakes; by default the real target's (`self(p, True)`).

        Override it where the two players' objectives differ (the hinge loss: -mean(D(G(x))))."""
        return self(prediction, True)

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor | None:
        """An extra term of the discriminator's loss (here R1 on `real`, when set), or None."""
        return self.r1_penalty(discriminator, real)

    def r1_penalty(self, discriminator: nn.Module, real: Tensor) -> Tensor | None:
        """r1_weight / 2 * mean over samples of ||grad_x D(x)||^2 at x = `real`; with r1_every = k, only in every
        k-th update of each discriminator, times k. None when off or not due."""
        weight = getattr(self, "r1_weight", 0.0)  # a subclass that skipped this __init__ has no R1
        if weight == 0.0:
            return None
        every = getattr(self, "r1_every", 1)
        due: Tensor | None = None
        if every > 1:
            self._r1_count(discriminator)
            if getattr(self, "_r1_masked", False):
                due = ((self.r1_rounds - 1) % every == 0).float()
            elif (int(self.r1_rounds) - 1) % every != 0:
                return None
        real = real.detach().requires_grad_(True)
        # create_graph: the penalty is itself differentiated in the discriminator's update
        grad, = torch.autograd.grad(discriminator(real).float().sum(), real, create_graph=True)
        # squared norms in float32: under bf16/fp16 autocast the squares of small gradients would underflow
        penalty = weight * every / 2 * grad.float().pow(2).flatten(1).sum(1).mean()
        return penalty if due is None else penalty * due

    def _r1_count(self, discriminator: nn.Module) -> None:
        """Count this update of `discriminator` in `r1_rounds`; an update is due when the count is 1 modulo r1_every.

        One loss serves several discriminators (the cycle method's D_A and D_B), so updates are counted in rounds:
        a round ends when a discriminator comes back. A checkpoint is written between training steps, at the end of
        a round, so a resumed run starts a new round with its first call, as the uninterrupted run does.
        """
        if self._r1_fresh or id(discriminator) in self._r1_seen:
            self.r1_rounds += 1
            self._r1_seen, self._r1_fresh = set(), False
        self._r1_seen.add(id(discriminator))

    @staticmethod
    def _start_a_round(module: AdversarialLoss, incompatible: Any) -> None:
        """After load_state_dict: the restored count ends a round, as checkpoints are written between steps."""
        module._r1_seen, module._r1_fresh = set(), True


class ReconstructionLoss(Loss):
    """Compares an output image with a target image."""

    role: ClassVar[str] = "reconstruction"

    def forward(self, output: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Buffer(Part):
    """Holds past generated images and answers a query batch with a mix of new and stored images."""

    kind = "buffer"
    hook = "i2i_buffers"

    def query(self, images: Tensor) -> Tensor:  # pragma: no cover - interface
        """Return the images the discriminator should see in place of `images` (same shape)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        """The buffer's contents as tensors, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore contents saved by `state_dict`."""


class Augment(Part):
    """Differentiable augmentation of the images a discriminator scores, real and fake alike (DiffAugment, ADA).

    A method builds one per discriminator (``parts.augment()``) and passes every image batch that discriminator
    scores through it, in the generator's update too: the transforms are differentiable, so gradients reach the
    generator through them. ``augment(images)`` draws a transform per sample; ``pair(a, b)`` applies one draw to
    two batches. Randomness comes from torch's global RNG on the images' device (seeded runs repeat). Images may
    stack several RGB images on the channel axis (pix2pix's input|output pair): colour transforms then act on
    each group of 3 channels, geometric ones on all channels alike.
    """

    kind = "augment"
    hook = "i2i_augments"
    #: False for the identity ("none"): methods then skip it, drawing no random numbers
    active: ClassVar[bool] = True

    def draw(self, images: Tensor) -> Any:  # pragma: no cover - interface
        """Random transform parameters for the batch `images` (one draw per sample)."""
        raise NotImplementedError

    def apply(self, images: Tensor, params: Any) -> Tensor:  # pragma: no cover - interface
        """`images` transformed with `params` from `draw`; differentiable with respect to `images`."""
        raise NotImplementedError

    def __call__(self, images: Tensor) -> Tensor:
        """`images` with a fresh random transform per sample."""
        return self.apply(images, self.draw(images))

    def pair(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """Two batches of the same shape with the same transform per sample (e.g. a real/fake pair)."""
        params = self.draw(first)
        return self.apply(first, params), self.apply(second, params)

    def observe(self, real_scores: Tensor, threshold: float) -> None:
        """The discriminator's raw scores on this step's (augmented) real images, and the score where it is
        undecided (`AdversarialLoss.threshold`): the overfitting signal adaptive augmentation tunes itself by."""

    def log_values(self) -> dict[str, float]:
        """Numbers for each log record (metrics.jsonl, trackers), e.g. ADA's probability p."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the augment learns while training (e.g. ADA's p), for checkpoints: tensors and JSON values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""


class Dataset(Part):
    """A source of training images; `load` gives a torch Dataset whose items are dicts.

    Items hold "A" and "B" image tensors (C, H, W) in [-1, 1] and their file names "A_path" and "B_path".
    """

    kind = "dataset"
    hook = "i2i_datasets"
    #: True when item i's A and B images correspond (pix2pix); False for unpaired domains (CycleGAN)
    paired: ClassVar[bool] = False

    def load(self, split: str, augment: bool) -> torch.utils.data.Dataset:  # pragma: no cover - interface
        """The items of `split` ("train", "test"), with random augmentation when `augment` is true."""
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        """Whether `load(split, ...)` has images (e.g. a testA/testB folder exists)."""
        return split == "train"

    def domains(self) -> tuple[str, ...]:
        """The names of its domains, in order: ("A", "B") for two-domain data (items {"A", "B", "A_path",
        "B_path"}). A dataset of N domains returns their names and gives items {"image", "domain" (the index into
        these names), "path"}."""
        return ("A", "B")

    def domain_channels(self) -> dict[str, int]:
        """The channels of each domain's images ({"A": 3, "B": 3} for RGB); methods size their networks by it."""
        return {"A": 3, "B": 3}

    def value_map(self) -> ValueMap | None:
        """How the raw pixel values of each domain map to [-1, 1] (`i2i.data.values.ValueMap`), so translations can be
        written back in the data's own range; None for the 8-bit RGB pipeline."""
        return None


@dataclass(frozen=True)
class LossSlot:
    """A loss a method uses: its role, the part used when the recipe names none, and its default weight."""

    role: type[Loss]
    default: str
    weight: float
    help: str


class PartFactory(Protocol):
    """What a method gets to build its parts from the recipe (the trainer provides it)."""

    def generator(self, **overrides: Any) -> Generator:
        """A new generator as the recipe's [generator] table says, with `overrides` applied."""

    def discriminator(self, **overrides: Any) -> Discriminator:
        """A new discriminator as the recipe's [discriminator] table says, with `overrides` applied."""

    def loss(self, slot: str) -> tuple[Loss, float]:
        """The loss in recipe table [loss.<slot>] and its weight."""

    def buffer(self) -> Buffer:
        """A new buffer as the recipe's [buffer] table says."""

    def augment(self) -> Augment:
        """A new augment as the recipe's [augment] table says ("none", the identity, when it has none)."""

    def build(self, table: str, /, **overrides: Any) -> Part:
        """A new part as the recipe's [<table>] table says, with `overrides` applied: any kind the method lists in
        `Method.parts`, e.g. ``parts.build("upscaler")`` for a kind a plugin declares (i2i_kinds)."""

    def options_of(self, part: Any) -> dict[str, Any]:
        """The options a part built by this factory was given (e.g. a generator's in/out channels)."""

    def channels(self, domain: str) -> int:
        """The channels of the data's images of `domain` ("A" or "B"): what a network's in/out_channels should be."""

    def domains(self) -> tuple[str, ...]:
        """The data's domains in order (`Dataset.domains`): ("A", "B"), or the names of an N-domain dataset."""


class Stepper(Protocol):
    """The optimizers and precision context a method uses inside `Method.step`."""

    def autocast(self) -> AbstractContextManager:
        """Context for forward computations: mixed precision as the recipe's run.precision says."""

    def zero_grad(self, group: str) -> None:
        """Clear the gradients of optimizer `group` (a key of `Method.optimizer_groups`)."""

    def backward(self, loss: Tensor) -> None:
        """Backpropagate `loss` (scaled when fp16 needs it)."""

    def step(self, group: str) -> None:
        """Apply optimizer `group`'s update."""


class Method(Part):
    """How one training step is computed from parts (e.g. the unpaired cycle step)."""

    kind = "method"
    hook = "i2i_methods"
    #: the loss slots this method reads from [loss.<slot>] recipe tables
    losses: ClassVar[dict[str, LossSlot]] = {}
    #: the component tables this method builds parts from ([generator], [discriminator], [buffer], [augment], or
    #: [<kind>] for a kind a plugin declares), each a recipe table of the part's name and options
    parts: ClassVar[tuple[str, ...]] = ("generator",)
    #: True when the method needs paired data (item i's A and B correspond), e.g. pix2pix
    paired_data: ClassVar[bool] = False
    #: the names `optimizer_groups` returns (e.g. ("G", "D")), so a recipe's [optim.<group>] tables are checked
    #: before anything is built; empty when they are known only once built
    groups: ClassVar[tuple[str, ...]] = ()

    def build(self, parts: PartFactory) -> None:  # pragma: no cover - interface
        """Create networks, losses and buffers from `parts`."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:  # pragma: no cover - interface
        """The trained networks by name (checkpoint file names, e.g. "G_A")."""
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:  # pragma: no cover - interface
        """Parameters per optimizer, e.g. {"G": [...], "D": [...]}; each group gets its own Adam."""
        raise NotImplementedError

    def buffers(self) -> dict[str, Buffer]:
        """Buffers by name, saved in checkpoints."""
        return {}

    def augments(self) -> dict[str, Augment]:
        """The active augments by name (e.g. one per discriminator): checkpoints save their state, log records
        their `log_values`. Leave out inactive ones ("none"), so runs without augmentation keep their format."""
        return {}

    def stateful(self) -> dict[str, Any]:
        """The method's pieces of training state by checkpoint name (each with state_dict/load_state_dict): every
        buffer as "buffer.<name>", every augment as "augment.<name>". A method keeping more state adds it here
        (e.g. "method.<name>"), and --resume gives it back."""
        return {**{f"buffer.{name}": buffer for name, buffer in self.buffers().items()},
                **{f"augment.{name}": augment for name, augment in self.augments().items()}}

    def log_values(self) -> dict[str, Any]:
        """Entries besides the losses for each log record (metrics.jsonl, trackers): by default each augment's
        `log_values` as ``augment_<key>: {<augment name>: value}``, e.g. ``"augment_p": {"D_A": 0.12}``."""
        values: dict[str, Any] = {}
        for name, augment in self.augments().items():
            for key, value in augment.log_values().items():
                values.setdefault(f"augment_{key}", {})[name] = value
        return values

    def step(self, batch: dict[str, Any], optim: Stepper) -> dict[str, Tensor]:  # pragma: no cover
        """Run one training step on `batch` and return the losses (detached scalars) by name."""
        raise NotImplementedError

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Named image batches to show in the report, e.g. real_A, fake_B, rec_A."""
        raise NotImplementedError

    def generator_for(self, direction: str) -> Generator:  # pragma: no cover - interface
        """The generator that translates in `direction` ("AtoB" or "BtoA"); KeyError for one it cannot."""
        raise NotImplementedError

    def domains(self) -> tuple[str, ...]:
        """The domains the method translates between: ("A", "B") for two-domain methods; a method of N domains
        returns the data's (`PartFactory.domains()`) once built."""
        return TWO_DOMAINS

    def generators(self) -> dict[str, Generator]:
        """The generator of each direction the method translates, e.g. {"AtoB": G_A, "BtoA": G_B}; a method of N domains
        names them "<source>_to_<target>", and one whose one network serves every target returns a
        `ConditionedGenerator` per direction ("to_<domain>")."""
        found = {}
        for direction in TWO_DIRECTIONS:
            try:
                found[direction] = self.generator_for(direction)
            except (KeyError, NotImplementedError):  # a one-sided method translates one way only
                continue
        return found

    def directions(self) -> dict[str, Direction]:
        """Every translation the method offers, by name: its source and target domain, the network file that serves
        it and the condition it takes (from `generators()` and `networks()`; a method rarely overrides it)."""
        names = {id(net): name for name, net in self.networks().items()}
        found = {}
        for direction, generator in self.generators().items():
            network = names.get(id(trained_network(generator)))
            if network is None:
                continue
            if isinstance(generator, ConditionedGenerator):
                found[direction] = Direction(None, self.domains()[generator.index], network, generator.index)
            else:
                source, target = route(direction) or (None, direction)
                found[direction] = Direction(source, target, network)
        return found


class Optimizer(Part):
    """Builds the torch optimizer of one parameter group (e.g. the generators' "G") from declared options.

    Every optimizer declares an ``lr`` option: the schedule scales it. A recipe chooses one in ``[optim]``
    (``optimizer = "adam"``, its options beside it) and may override any option per group in
    ``[optim.<group>]``, e.g. ``[optim.D] lr = 4e-4`` for TTUR.
    """

    kind = "optimizer"
    hook = "i2i_optimizers"

    def build(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:  # pragma: no cover - interface
        """A torch optimizer over `params` with this part's options; its state is saved in checkpoints."""
        raise NotImplementedError

    def build_for_capture(self, params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
        """The optimizer for a captured step (`run.capture = true`): its step reads no value on the host and takes
        its learning rate as a tensor on `device` (which the schedule fills in place), e.g. torch's fused or
        capturable kernels. The default refuses, naming the optimizer."""
        raise I2IError(f"optimizer {self.name!r} has no capture-ready step (Optimizer.build_for_capture), so"
                       " run.capture cannot use it: set run.capture = false or use adam/adamw")


@dataclass(frozen=True)
class ScheduleClock:
    """Where training is, for a schedule: the step about to run (0-based), its epoch and the run's length."""

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    #: the recipe's [train] epochs and decay_epochs (the reference's --n_epochs and --n_epochs_decay)
    epochs: int
    decay_epochs: int


class Schedule(Part):
    """The learning-rate policy: a factor of each group's base rate, asked before every step."""

    kind = "schedule"
    hook = "i2i_schedules"

    def factor(self, clock: ScheduleClock) -> float:  # pragma: no cover - interface
        """The multiplier of the base learning rate for the step `clock` describes."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a stateful schedule must keep across --resume (tensors and JSON values); most keep nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
