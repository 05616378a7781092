"""Hook specifications: the plugin author's reference.

A plugin is a Python module named by an entry point in the ``i2i`` group of its package's metadata::

    [project.entry-points.i2i]
    my_parts = "my_package.parts"

The module holds functions marked with ``@i2i.hookimpl`` whose names are the hooks below. Each hook returns
the part *classes* the plugin adds; the core instantiates them with the options a recipe gives. A part class
subclasses the interface of its kind from :mod:`i2i.contract.parts`, sets ``name`` (the name recipes use, unique per
kind) and ``options`` (a tuple of :class:`i2i.Option`), and its docstring's first line is the description
``i2i list`` prints. Every option a recipe passes has been checked against ``options`` (and by the class's
``check_options``, for checks that need several options or a look outside, e.g. a model name or a file) before
the constructor runs, and the constructor receives every declared option as a keyword argument.

The stock parts (ResNet generator, PatchGAN, LSGAN, Adam, the linear schedule, the metrics.jsonl writer, ...)
register through exactly these hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from i2i.contract.callbacks import Callback
from i2i.contract.parts import Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method, Optimizer, Schedule

if TYPE_CHECKING:
    import click

hookspec = pluggy.HookspecMarker("i2i")
hookimpl = pluggy.HookimplMarker("i2i")


@hookspec
def i2i_generators() -> list[type[Generator]]:
    """Return generator classes (subclasses of :class:`i2i.contract.parts.Generator`).

    A generator is an ``nn.Module`` mapping (N, C, H, W) images in [-1, 1] to images of the same size. Set
    ``size_multiple`` to the factor input sizes must divide by, and ``batch_independent = False`` when an
    output depends on other samples of the batch (batch norm), which stops the trainer from batching calls.
    Declare ``in_channels`` and ``out_channels`` options (default 3) so methods can set them. Implement
    ``feature_channels`` and ``encode`` (see :class:`i2i.contract.parts.Generator`) to expose the encoder's feature maps,
    which methods that compare them (``cut``'s PatchNCE) need.
    """


@hookspec
def i2i_discriminators() -> list[type[Discriminator]]:
    """Return discriminator classes (subclasses of :class:`i2i.contract.parts.Discriminator`).

    A discriminator is an ``nn.Module`` returning raw scores (no sigmoid) for a batch of images: one per image
    or a map of per-patch scores. Declare an ``in_channels`` option (default 3): conditional methods such as
    pix2pix set it to 6 to score input and output together.
    """


@hookspec
def i2i_losses() -> list[type[Loss]]:
    """Return loss classes, each a subclass of :class:`i2i.contract.parts.AdversarialLoss` or
    :class:`i2i.contract.parts.ReconstructionLoss`.

    Adversarial losses are called as ``loss(prediction, target_is_real)`` for the discriminator's objective and
    as ``loss.generator_loss(prediction)`` for the generator's (by default ``loss(prediction, True)``; override it
    where they differ, as the hinge loss does). ``penalty(discriminator, real, fake)`` adds terms to the
    discriminator's loss: the base class gives R1 (options ``r1_weight``, ``r1_every``, which every adversarial
    loss declares; list ``*AdversarialLoss.options`` among your own). The class attribute ``threshold`` is the raw
    score at which D is undecided (adaptive augmentation reads it). Reconstruction losses are called as
    ``loss(output, target)``. A recipe's ``[loss.<slot>]`` table names the loss and its ``weight``; the weight is
    applied by the method, not the loss. A loss's torch buffers are saved in checkpoints.
    """


@hookspec
def i2i_buffers() -> list[type[Buffer]]:
    """Return buffer classes (subclasses of :class:`i2i.contract.parts.Buffer`).

    A buffer answers ``query(fakes)`` with the batch the discriminator should see instead (e.g. a pool of past
    fakes) and saves its contents with ``state_dict`` for checkpoints.
    """


@hookspec
def i2i_augments() -> list[type[Augment]]:
    """Return augment classes (subclasses of :class:`i2i.contract.parts.Augment`), chosen by a recipe's ``[augment]``.

    An augment transforms every image batch a discriminator scores, real and fake, in D's update and in G's,
    differentiably (gradients reach the generator through it). ``draw(images)`` returns random parameters, one
    draw per sample, from torch's global RNG; ``apply(images, params)`` applies them; ``augment(images)`` does
    both and ``pair(a, b)`` applies one draw to two batches. Images may stack RGB images on the channel axis
    (pix2pix's discriminator sees 6 channels). ``observe(real_scores, threshold)`` receives D's raw scores on the
    augmented reals of each update and the loss's ``threshold`` (adaptive augmentation tunes itself from them);
    ``state_dict`` / ``load_state_dict`` go into every checkpoint and ``log_values()`` into every log record.
    ``active = False`` marks the identity (``none``, a recipe's default), which methods skip entirely.
    """


@hookspec
def i2i_methods() -> list[type[Method]]:
    """Return method classes (subclasses of :class:`i2i.contract.parts.Method`).

    A method builds its networks from the recipe through the factory it is given, says which parameters each
    optimizer owns, and computes one training step. It declares its loss slots in ``losses`` and the component
    tables it builds from in ``parts`` (with ``"augment"`` there, ``parts.augment()`` gives the recipe's augment
    and ``augments()`` returns the active ones, for checkpoints and the log).
    """


@hookspec
def i2i_datasets() -> list[type[Dataset]]:
    """Return dataset classes (subclasses of :class:`i2i.contract.parts.Dataset`).

    ``load(split, augment)`` returns a ``torch.utils.data.Dataset`` whose items are dicts with "A" and "B"
    image tensors in [-1, 1] and their paths "A_path", "B_path".
    """


@hookspec
def i2i_optimizers() -> list[type[Optimizer]]:
    """Return optimizer classes (subclasses of :class:`i2i.contract.parts.Optimizer`).

    ``build(params)`` returns a ``torch.optim.Optimizer`` over one parameter group of a method (e.g. "G" or
    "D"). Declare an ``lr`` option: the schedule multiplies it. The optimizer's ``state_dict`` is saved in every
    checkpoint and restored on --resume.
    """


@hookspec
def i2i_schedules() -> list[type[Schedule]]:
    """Return learning-rate schedule classes (subclasses of :class:`i2i.contract.parts.Schedule`).

    ``factor(clock)`` is asked before every step and multiplies each group's base rate; ``clock`` says the
    step, epoch and the run's length (:class:`i2i.contract.parts.ScheduleClock`). A schedule that keeps state returns
    it from ``state_dict`` for checkpoints.
    """


@hookspec
def i2i_callbacks() -> list[type[Callback]]:
    """Return callback classes (subclasses of :class:`i2i.contract.callbacks.Callback`).

    A callback acts on the loop's lifecycle events: ``on_train_start``, ``on_step_end`` (with the step's loss
    tensors), ``on_log`` (the logged means, as a record later callbacks see), ``on_checkpoint_save`` /
    ``on_checkpoint_load``, and ``on_train_end`` (also after Ctrl-C or a non-finite loss). Its
    ``state_dict`` goes into every checkpoint. A recipe enables it with a ``[callback.<name>]`` table of its
    options; set ``default = True`` on the class to run without being named (the stock metrics.jsonl writer,
    progress bar, samples, report, checkpoints and finite-loss check do).
    """


@hookspec
def i2i_commands() -> list[click.Command]:
    """Return ``click`` commands to add to the ``i2i`` command line (e.g. ``i2i hello``).

    A command whose name is taken (by the core or another plugin) is not added; ``i2i --help`` warns naming
    both packages. Raise :class:`i2i.I2IError` for a clear one-line error.
    """
