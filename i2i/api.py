"""The public API for plugin authors: import what a part needs from here, never from `i2i_stock` internals.

A plugin is a module of part classes and ``@hookimpl`` functions named after the hooks of ``i2i.hookspecs``
(``i2i_generators``, ``i2i_datasets``, ...), reached through an entry point in the ``i2i`` group.
Everything below keeps its name and meaning across releases; any other module of ``i2i`` may change.

Part interfaces (subclass one, set ``name`` and ``options``; the docstring's first line is its description):

- ``Generator``: maps images (N, C, H, W) in [-1, 1] to translated images of the same size; declares the sizes
  it takes (``size_multiple``, ``min_size``, ``size_options``), checked against ``data.crop_size`` before training.
- ``Discriminator``: scores images; raw scores with the batch dimension first, optional ``features``; declares
  the sizes it takes as a generator does.
- ``Loss``: the base of the two loss roles below.
- ``AdversarialLoss``: ``loss(prediction, target_is_real)`` for D, ``generator_loss(prediction)`` for G, and
  ``penalty`` (R1 via ``r1_weight``, which every adversarial loss takes).
- ``ReconstructionLoss``: ``loss(output, target)``, e.g. the cycle and identity terms.
- ``Buffer``: a history of generated images the discriminator sees (an image pool); state in ``state_dict``.
- ``Augment``: differentiable augmentation of what a discriminator scores (DiffAugment, ADA): ``draw``, ``apply``,
  ``observe``; state in ``state_dict``.
- ``Dataset``: a source of training images; ``load(split, augment)`` gives items {"A", "B", "A_path", "B_path"}
  (two domains), or {"image", "domain", "path"} for N domains, named by ``domains()``.
- ``Method``: one training step computed from parts (the cycle step, pix2pix, CUT).
- ``Optimizer``: builds the torch optimizer of one parameter group from declared options.
- ``Schedule``: the learning-rate factor asked before every step.
- ``Callback``: acts on the training loop's lifecycle events (logging, samples, checkpoints, EMA, ...).
- ``Part``: the base of every kind; a new kind of part is a subclass that sets ``kind`` (e.g. ``"upscaler"``),
  returned from the hook ``i2i_kinds``; its parts subclass it and register through ``i2i_parts``. Any part may
  define ``prepare_capture(device)`` (and an optimizer ``build_for_capture``) for runs whose step is recorded as
  a CUDA graph (``run.capture``).

Domains and directions (methods of more than two domains):

- ``Direction``: one translation a method offers (source, target, the network file serving it, its condition);
  ``Method.directions()`` lists them, ``Method.domains()`` names the domains.
- ``ConditionedGenerator``: a generator conditioned on the target domain, bound to one target (StarGAN's
  directions); ``with_condition(images, codes)`` appends one-hot domain codes (``one_hot``) as input channels;
  ``trained_network(generator)`` is the network whose weights a direction's generator uses; ``spread(length,
  count)`` picks items spread over an N-domain split (whose items come domain by domain).

What methods, schedules and callbacks are given:

- ``LossSlot``: a loss a method declares: its role, default part and default weight.
- ``PartFactory``: builds a method's parts from the recipe.
- ``Stepper``: the optimizers and precision context a method updates weights through.
- ``ScheduleClock``: the step, epoch and run length a schedule reads.
- ``TrainingContext``: what a callback sees of the run (its parts, step, helpers, and ``control``).
- ``TrainingControl``: ``context.control``: request a checkpoint or a stop, and whether a checkpoint is written at
  the end of this step (``checkpoint_due``).

Declaring and registering:

- ``Option``: one declared option (name, type, default, help; ``choices``, ``min``, ``max``, ``init_only``,
  ``replaces``: a deprecated recipe key it took over, which keeps working with a warning).
- ``hookimpl``: marks a module's hook functions, e.g. ``@hookimpl def i2i_generators(): return [MyGen]``.
- ``I2IError``: the error for a mistake the user can fix; one line naming the option, file or value.
- ``create``: builds an installed part by kind and name, e.g. to build on a stock network.

Sweep executors (returned from the hook ``i2i_executors``; ``i2i sweep --executor NAME``):

- ``Executor``: runs a sweep's runs somewhere (``run(sweep, combos)``, optional ``check()`` and ``where(...)``).
- ``SweepRuns``: what an executor is handed: each run's command line and log file, and ``record`` for its status.
- ``Combination``: one run of a sweep: its folder name and its ``--set`` overrides.

Runs (for callbacks and commands that read or write them):

- ``RunFolder``: a run folder's layout and readers: recipe, metrics.jsonl, samples, checkpoints (newest, best,
  by step), each checkpoint's training.json read with its checksums verified.
- ``RunCheckpoints``: ``context.checkpoints``, the run's checkpoints as callbacks reach them: ``newest()``,
  ``best()``, ``step_of(checkpoint)``, ``read_variant(checkpoint, variant)`` (the tensors a callback's
  ``checkpoint_variants`` wrote, checksums verified), ``prune(keep)`` (never the current or final step) and
  ``copy_to_best(checkpoint)``. A callback declares the variant inference uses by default with
  ``Callback.weights_variant`` (e.g. an EMA average's).

Network building blocks (what the stock networks are built from):

- ``NORM_OPTION``, ``norm_option(default)``: the ``norm`` option (instance, batch, syncbatch, none).
- ``NORMS``, ``BATCH_NORMS``: the norm names, and those that mix the samples of a batch.
- ``norm_layer(name)``: a factory building that normalization layer for a number of channels.
- ``SyncBatchNorm2d``: batch norm over the global batch of a torchrun run, on GPUs and CPUs.
- ``batch_independent(norm)``: whether a net normalized by ``norm`` treats each image on its own.
- ``instance_norms(net)``: a net's instance norms, what ``Generator.tile_norms`` returns for the stock networks
  (None when it also holds a norm tiled translation cannot give whole-image statistics, e.g. GroupNorm).
- ``conv_bias(norm)``: whether convs followed by ``norm`` get a bias (the reference code's rule).
- ``INIT_OPTIONS``, ``INITS``: the ``init`` and ``init_gain`` options, and the init names.
- ``init_weights(net, kind, gain)``: initialize conv/linear and batch-norm weights as the CycleGAN reference.
- ``stage_width(channels, stage)``, ``MAX_WIDTH_MULT``: widths doubling per stage, capped at 8x.
- ``SPECTRAL_NORM_OPTION``, ``spectral_normalize(net)``: the ``spectral_norm`` option of the stock discriminators,
  and spectral normalization of every conv/linear weight of a net (after its init).
- ``ANTIALIAS_OPTION``, ``BlurDownsample(channels)``, ``BlurUpsample(channels)``: the ``antialias`` option and
  the fixed-blur down/upsampling by 2 it builds with (Zhang 2019).

Image files (the core's one reader, for datasets of your own):

- ``read_image(path)``: an RGB image, EXIF rotation applied; a bad file raises ``I2IError`` naming it.
- ``list_images(folder)``: the image files under a folder, recursively and sorted.
- ``IMAGE_EXTENSIONS``: the file extensions ``list_images`` takes.
- ``image_opens(path)``: whether a file's header is an image's; warns naming the file if not.
- ``ImageFiles``: files read by index, a bad one replaced by the next that decodes.
- ``transform_image``, ``transform_images``: resize, crop, flip to tensors in [-1, 1] (the same crop for a pair).

Image data beyond 8-bit RGB (grayscale, 16-bit, float, N bands):

- ``read_array(path)``: an image or ``.npy`` file as a NumPy array (H, W, C) in its own dtype; a bad file, or a
  float array holding NaN or infinite values, raises ``I2IError`` naming it.
- ``ARRAY_EXTENSIONS``: the file extensions ``read_array`` takes.
- ``PIXEL_OPTIONS``, ``Pixels``: a dataset's ``channels``/``values``/``low``/``high`` options, and their checked
  form, which fits the ``ValueMap`` on the training files.
- ``ValueMap``: how each domain's raw pixel values map to [-1, 1] (what ``Dataset.value_map`` returns).
- ``transform_tensors``: resize, crop, flip float tensors alike (the float counterpart of ``transform_images``).

Messages:

- ``toml_value(value)``: a value as a recipe spells it, for messages (``decay = 1.5 must ...``).
- ``first_line(error)``: the first line of an exception's message, for one-line errors that wrap another.

Weights files:

- ``read_weights(path)``: tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` read with
  ``weights_only=True``; a bad file raises ``I2IError`` naming it.

Evaluation (what ``i2i evaluate`` measures, for callbacks that validate while training):

- ``measure_held_out(generators, dataset, split, batch_size, device, feature, workers, images, on_progress)``:
  the scores of each direction's generator ({"AtoB": G, ...}) on a dataset part's split, unaugmented (its first
  ``images`` items when given), as {direction: {metric: value}}; a value that is not finite is None. Paired data
  gives l1, psnr, ssim (images in [0, 1]); both directions give cycle_l1; a ``feature`` network gives fid, kid.
- ``check_measurable(dataset, split, directions, features, fix)``: raises ``I2IError`` when the split is missing
  or nothing can be scored (unpaired data, one direction, no features); ``fix`` is the advice its message ends with.
- ``metric_names(directions, paired, features)``: the scores ``measure_held_out`` gives each direction.
- ``LOWER_IS_BETTER``: every score's name and whether lower is better; ``improves(metric, value, best)`` whether
  a value beats the best so far (None: none yet; a missing or non-finite value never does).
- ``DIRECTIONS``: the two-domain directions, {"AtoB": ("A", "B"), "BtoA": ("B", "A")}: (source, target) domain.
- ``FID_PROTOCOLS``: the FID protocols, the default first: "standard" (the TF-Inception of pytorch-fid, comparable
  with published FIDs) and "torchvision". ``load_inception(path, protocol)``: the Inception feature network of a
  protocol with the weights of a local file (None: the protocol the file is laid out for); a wrong file raises
  ``I2IError`` naming it and the file that fits.
- ``inception_path(protocol)``: where ``i2i download inception`` keeps its weights; ``download_command(protocol)``
  the command that fetches them.

Pages (what ``report.html`` is made of):

- ``save_samples(visuals, path)``: a PNG grid of named image batches (a row per sample) with a sidecar naming
  the columns.
- ``write_report(run_dir)``: (re)write a run folder's report.html from its metrics and samples.

Types handed to plugins:

- ``Recipe``: a resolved recipe (``recipe["train"]["log_every"]``, ``recipe.part("generator")``).
- ``Distributed``: the processes of a torchrun run: ``rank``, ``world_size``, ``is_main``, ``active``, and
  collectives (``gather``, ``any``, ``barrier``).

Testing a plugin: ``i2i.testing`` (``check_part``, ``run_recipe``, ``SMOKE_RECIPE``) is its own module, as it
imports the trainer.
"""

from __future__ import annotations

from i2i.contract.options import Option, toml_value
from i2i.data.images import ARRAY_EXTENSIONS, read_array
from i2i.data.pixels import PIXEL_OPTIONS, Pixels, transform_tensors
from i2i.data.values import ValueMap
from i2i.engine.distributed import Distributed
from i2i.errors import I2IError, first_line
from i2i.recipe import Recipe
from i2i.storage.cache import inception_path
from i2i.storage.weights import read_weights
from i2i.hookspecs import hookimpl
from i2i.lazy import lazy_names
from i2i.data.images import (IMAGE_EXTENSIONS, ImageFiles, image_opens, list_images, read_image, transform_image,
                        transform_images)
from i2i.nn.layers import (ANTIALIAS_OPTION, BATCH_NORMS, INIT_OPTIONS, INITS, MAX_WIDTH_MULT, NORM_OPTION, NORMS,
                        SPECTRAL_NORM_OPTION, BlurDownsample, BlurUpsample, SyncBatchNorm2d, batch_independent,
                        conv_bias, init_weights, instance_norms, norm_layer, norm_option, spectral_normalize,
                        stage_width)
from i2i.contract.callbacks import Callback, RunCheckpoints, TrainingContext, TrainingControl
from i2i.contract.domains import ConditionedGenerator, Direction, one_hot, spread, trained_network, with_condition
from i2i.contract.parts import (AdversarialLoss, Augment, Buffer, Dataset, Discriminator, Generator, Loss, LossSlot,
                                Method, Optimizer, Part, PartFactory, ReconstructionLoss, Schedule, ScheduleClock,
                                Stepper)
from i2i.contract.registry import create
from i2i.storage.rundir import RunFolder

__all__ = [
    # part interfaces
    "Generator", "Discriminator", "Loss", "AdversarialLoss", "ReconstructionLoss", "Buffer", "Augment", "Dataset",
    "Method", "Optimizer", "Schedule", "Callback", "Part",
    # what methods, schedules and callbacks are given
    "LossSlot", "PartFactory", "Stepper", "ScheduleClock", "TrainingContext", "TrainingControl",
    "Direction", "ConditionedGenerator", "with_condition", "one_hot", "trained_network", "spread",
    # declaring and registering
    "Option", "hookimpl", "I2IError", "create",
    # runs
    "RunFolder", "RunCheckpoints",
    # network building blocks
    "NORM_OPTION", "norm_option", "NORMS", "BATCH_NORMS", "norm_layer", "SyncBatchNorm2d", "batch_independent",
    "conv_bias", "instance_norms", "INIT_OPTIONS", "INITS", "init_weights", "stage_width", "MAX_WIDTH_MULT",
    "SPECTRAL_NORM_OPTION", "spectral_normalize", "ANTIALIAS_OPTION", "BlurDownsample", "BlurUpsample",
    # image files
    "read_image", "list_images", "IMAGE_EXTENSIONS", "image_opens", "ImageFiles", "transform_image",
    "transform_images",
    # image data beyond 8-bit RGB
    "read_array", "ARRAY_EXTENSIONS", "PIXEL_OPTIONS", "Pixels", "ValueMap", "transform_tensors",
    # messages, weights files
    "toml_value", "first_line", "read_weights",
    # evaluation
    "measure_held_out", "check_measurable", "metric_names", "LOWER_IS_BETTER", "improves", "DIRECTIONS",
    "FID_PROTOCOLS", "load_inception", "inception_path", "download_command",
    # pages
    "save_samples", "write_report",
    # types handed to plugins
    "Recipe", "Distributed",
    # sweep executors (hook i2i_executors)
    "Executor", "SweepRuns", "Combination",
]

# Imported on first use: evaluation and pages pull in torchmetrics and matplotlib, which a part's module never needs.
_LAZY = {**{name: "i2i.tools.heldout" for name in ("measure_held_out", "check_measurable", "metric_names",
                                                  "LOWER_IS_BETTER", "improves", "DIRECTIONS")},
         **{name: "i2i.tools.inception" for name in ("FID_PROTOCOLS", "load_inception", "download_command")},
         **{name: "i2i.tools.report" for name in ("save_samples", "write_report")},
         **{name: "i2i.tools.executors" for name in ("Executor", "SweepRuns")},
         "Combination": "i2i.tools.sweep"}


__getattr__ = lazy_names(globals(), _LAZY)
