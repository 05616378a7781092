"""Hook specifications: the plugin author's reference.

A plugin is a Python module named by an entry point in the ``i2i`` group of its package's metadata::

    [project.entry-points.i2i]
    my_parts = "my_package.parts"

The module holds functions marked with ``@i2i.hookimpl`` whose names are the hooks below. The part hooks return
the part *classes* the plugin adds; the core instantiates them with the options a recipe gives. A part class
subclasses the base class of its kind (:class:`i2i.api.Generator`, ..., or a kind of the plugin's own, see
``i2i_kinds``), sets ``name`` (the name recipes use, unique per kind) and ``options`` (a tuple of
:class:`i2i.Option`), and its docstring's first line is the description ``i2i list`` prints. Every option a
recipe passes has been checked against ``options`` (and by the class's ``check_options``, for checks that need
several options or a look outside, e.g. a model name or a file) before the constructor runs, and the constructor
receives every declared option as a keyword argument.

A kind is its base class: a subclass of :class:`i2i.api.Part` that sets ``kind``. A part's kind is the ``kind``
of the nearest class in its MRO that sets one, so ``i2i_parts`` takes parts of every kind in one list. The
per-kind hooks (``i2i_generators``, ``i2i_losses``, ...) are older spellings of ``i2i_parts`` for the core's
kinds, and keep working.

The core's own kinds (i2i/contract/kinds.py) and the stock parts (ResNet generator, PatchGAN, LSGAN, Adam, the
linear schedule, the metrics.jsonl writer, ...) register through exactly these hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from i2i.contract.callbacks import Callback
from i2i.contract.parts import (Augment, Buffer, Dataset, Discriminator, Generator, Loss, Method, Optimizer, Part,
                                Schedule)

if TYPE_CHECKING:
    import click

hookspec = pluggy.HookspecMarker("i2i")
hookimpl = pluggy.HookimplMarker("i2i")


@hookspec
def i2i_kinds() -> list[type[Part]]:
    """Return the base classes of new kinds of part: one class per kind, subclassing :class:`i2i.api.Part`.

    Setting ``kind`` on the class is the whole declaration::

        class Upscaler(Part):
            "Enlarges a batch of images (N, C, H, W) by an integer factor."
            kind = "upscaler"

        @hookimpl
        def i2i_kinds():
            return [Upscaler]

    From then on ``i2i list upscaler`` and ``i2i info upscaler NAME`` show its parts, ``create("upscaler",
    NAME)`` builds one, a recipe's ``[upscaler]`` table (``name`` and the chosen part's options) is validated
    like ``[generator]`` for every method that lists ``"upscaler"`` in ``Method.parts``, the method builds it
    with ``parts.build("upscaler", **overrides)``, and ``i2i.testing.check_part`` checks its options,
    construction and state. A part of the kind that has ``state_dict``/``load_state_dict`` is saved in every
    checkpoint under its table's name (``upscaler``; a second one built from the table ``upscaler.1``), and
    restored on ``--resume``; one whose ``state_dict()`` is empty is left out.

    A kind's name is lower case (letters, digits, ``_``) and is not a recipe table of the core (``run``,
    ``data``, ``optim``, ``train``). When two packages declare the same name, the first in precedence order (the
    core, then distributions by name) keeps it and ``i2i list`` warns naming both. The base class's docstring
    says what a part of the kind does; methods call it through the interface the base class defines.
    """


@hookspec
def i2i_parts() -> list[type[Part]]:
    """Return part classes of any kind, core or declared by a plugin (``i2i_kinds``), in one list.

    Each class's kind is the ``kind`` of the nearest class in its MRO that sets one (its base class), so
    ``[ResnetGenerator, Lsgan, MyUpscaler]`` registers a generator, a loss and an upscaler. A class whose kind no
    installed package declares is left out (``i2i list`` warns naming it), and the plugin's other parts still load.
    """


@hookspec
def i2i_generators() -> list[type[Generator]]:
    """Return generator classes (subclasses of :class:`i2i.contract.parts.Generator`).

    A generator is an ``nn.Module`` mapping (N, C, H, W) images in [-1, 1] to images of the same size. Declare
    the sizes it takes: ``size_multiple``, the factor input sides must divide by, and ``min_size``, the smallest
    side it takes in training with a batch of one (set both on the instance where options decide them, e.g.
    ``2 ** downs``, and name those options in ``size_options``); a ``data.crop_size`` outside them is refused
    before training in one line naming the part and the smallest size that works, and
    ``i2i.testing.check_part`` runs the part at its declared minimum. Set ``batch_independent = False`` when an
    output depends on other samples of the batch (batch norm), which stops the trainer from batching calls.
    Declare ``in_channels`` and ``out_channels`` options (default 3) so methods can set them. Implement
    ``feature_channels`` and ``encode`` (see :class:`i2i.contract.parts.Generator`) to expose the encoder's feature
    maps, which methods that compare them (``cut``'s PatchNCE) need.
    """


@hookspec
def i2i_discriminators() -> list[type[Discriminator]]:
    """Return discriminator classes (subclasses of :class:`i2i.contract.parts.Discriminator`).

    A discriminator is an ``nn.Module`` returning raw scores (no sigmoid) for a batch of images: one per image
    or a map of per-patch scores. Declare an ``in_channels`` option (default 3): conditional methods such as
    pix2pix set it to 6 to score input and output together. It scores images of the crop size, so declare the
    sizes it takes as a generator does (``size_multiple``, ``min_size``, ``size_options``; a PatchGAN of n
    layers needs 3 * 2 ** n px).
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
    and ``augments()`` returns the active ones, for checkpoints and the log). A table of a kind a plugin declares
    (``i2i_kinds``), e.g. ``"upscaler"`` in ``parts``, is checked in every recipe against the chosen part's
    options, and ``parts.build("upscaler", **overrides)`` builds it (``build`` takes the core's tables too).
    Declare the names ``optimizer_groups()`` returns in ``groups`` (e.g. ``("G", "D")``), so a recipe's
    ``[optim.<group>]`` table naming another group is refused before anything is built.
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


@hookspec
def i2i_executors() -> list[type]:
    """Return sweep executor classes: where ``i2i sweep --executor NAME`` runs a sweep's runs.

    An executor subclasses :class:`i2i.api.Executor`, sets ``name`` (what ``--executor`` takes; the
    core's ``local`` and ``slurm`` cannot be replaced) and a one-line docstring, and implements ``run(sweep,
    combos)``: start every run of ``combos`` (none finished; some may carry the job id of an earlier, interrupted
    sweep in ``sweep.entry(name)``), follow them until each has ended, and record each change with
    ``sweep.record(combo, status, detail, job)`` (status ``submitted``, ``running``, ``finished`` or ``failed``).
    ``sweep.command(combo)`` is the run's command line (``python -m i2i run ... --resume``, so a run started again
    continues from its newest checkpoint) and ``sweep.log(combo)`` its log file. Optionally ``check()`` refuses,
    before anything is written, where the executor cannot work (raise :class:`i2i.I2IError`), and ``where(out, name,
    entry)`` says where a run stands for ``i2i sweep --status``. The sweep's state file stays the truth: a run is
    finished when its executor recorded it so, and ``--resume`` hands every other run to the executor again.
    """
