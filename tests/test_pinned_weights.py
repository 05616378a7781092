"""Every recipe in recipes/ gives the same weights for the same seed as before a redesign (a pinned checksum).

The pins in pinned_weights.json were measured before the training loop was opened to plugins (issue 16) and must
not change when code is reorganised. Each run is short but crosses epochs, so the learning-rate schedule, the
image pools, the optimizers' state and the data order all enter the checksum.

Float results depend on the kernels a CPU runs, so the runs cap torch, oneDNN and MKL at AVX2 code paths on one
thread. That gives the same bits on the Intel CPUs the pins were made on, but not on every x86-64 CPU: an AMD
EPYC with AVX-512 and native bf16 (family 26, Zen 5) gives other bits under the same caps. A pin's "also" list holds the
digests of the same code measured on such a CPU (each with the CPU it was measured on), taken from the code
before a change, never after it. A recipe added later may be pinned on one CPU only ("only_on": vendor, family,
model); elsewhere its check is skipped, saying so, until its digest there is added to "also". Regenerate the pins (only when a change of the numbers is
intended, and say so in the commit) with ``I2I_WRITE_PINS=1 pytest tests/test_pinned_weights.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import RECIPES, run_module

PINS = Path(__file__).with_name("pinned_weights.json")
#: the same kernels on any x86-64 CPU with AVX2 (torch's own, oneDNN's and MKL's), on one thread
REPRODUCIBLE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: 4 items a domain, batch 1: 10 steps cross two epoch ends, so the linear decay changes the rate twice
SHORT = ["--set", "data.name=synthetic", "--set", "data.count=4", "--set", "data.workers=0",
         "--set", "train.epochs=1", "--set", "train.decay_epochs=3", "--set", "train.max_steps=10",
         "--set", "train.log_every=5", "--set", "train.checkpoint_every=0", "--set", "train.samples=0",
         "--set", "run.device=cpu"]
SMALL = ["--set", "data.load_size=36", "--set", "data.crop_size=32"]
TINY_RESNET = ["--set", "generator.blocks=1", "--set", "generator.channels=4"]
TINY_PATCHGAN = ["--set", "discriminator.channels=4", "--set", "discriminator.layers=2"]
SETTINGS = {
    "cyclegan": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "buffer.size=3"],
    "quickstart": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "buffer.size=3"],
    "cyclegan_fast": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "buffer.size=3"],
    "cut": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "method.num_patches=8", "--set",
            "method.head_channels=8"],
    "fastcut": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "method.num_patches=8", "--set",
                "method.head_channels=8"],
    "pix2pix": [*SMALL, "--set", "data.paired=true", "--set", "generator.downs=5", "--set",
                "generator.channels=4", *TINY_PATCHGAN],
    "dualgan": [*SMALL, "--set", "generator.downs=5", "--set", "generator.channels=4", *TINY_PATCHGAN],
    "discogan": ["--set", "data.load_size=32", "--set", "data.crop_size=32", "--set", "data.batch_size=2",
                 "--set", "generator.depth=3", "--set", "generator.channels=4", *TINY_PATCHGAN],
    # its published starting generators need `i2i download`: pinned from random weights (the loading itself is
    # tested in test_finetune_recipe.py), which pins the rest of the recipe (the generators' own learning rate)
    "finetune_cyclegan": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "buffer.size=3", "--set", "init.G_A.from=",
                          "--set", "init.G_B.from="],
    # the 3-domain toy data: one generator for every target, updated every 5th step (twice in 10)
    "stargan": [*SMALL, *TINY_RESNET, *TINY_PATCHGAN, "--set", "data.name=synthetic_domains", "--set",
                "data.batch_size=2"],
    "cyclegan_timm": ["--set", "data.load_size=64", "--set", "data.crop_size=64", "--set",
                      "generator.backbone=resnet18", "--set", "generator.decoder_channels=4", *TINY_PATCHGAN,
                      "--set", "train.max_steps=6"],
}


def weights_digest(folder: Path) -> str:
    """SHA-256 over every network's tensors in a checkpoint folder (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        if file.name == "training.safetensors":
            continue
        tensors = load_file(file)
        for key in sorted(tensors):
            value = tensors[key].contiguous()
            digest.update(f"{file.stem}/{key}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return digest.hexdigest()


def cpu_family() -> str:
    """Vendor, family and model of this CPU, as /proc/cpuinfo says (where the pins' bits can differ)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    return f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def test_every_recipe_has_settings():
    assert sorted(SETTINGS) == sorted(p.stem for p in RECIPES.glob("*.toml")), \
        "a recipe was added: give it short settings here and pin its weights"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pins are for x86-64 CPUs (AVX2)")
@pytest.mark.parametrize("recipe", sorted(SETTINGS))
def test_recipe_weights_match_the_pin(tmp_path, recipe):
    run = tmp_path / recipe
    result = run_module("run", RECIPES / f"{recipe}.toml", *SHORT, *SETTINGS[recipe], "--out", run,
                        env=REPRODUCIBLE)
    assert result.code == 0, result.err
    final = sorted((run / "checkpoints").glob("step-*"))[-1]
    found = weights_digest(final)
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    if os.environ.get("I2I_WRITE_PINS"):
        pins[recipe] = {**pins.get(recipe, {}), "step": final.name, "sha256": found}
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert recipe in pins, f"no pin for {recipe}: run with I2I_WRITE_PINS=1 once, before changing the code"
    pin = pins[recipe]
    assert final.name == pin["step"]
    accepted = {pin["sha256"], *(other["sha256"] for other in pin.get("also", []))}
    if found not in accepted and pin.get("only_on") and pin["only_on"] != cpu_family():
        pytest.skip(f"{recipe}'s pin was measured on {pin['only_on']} only, not on this {cpu_family()}")
    assert found in accepted, f"{recipe}: the weights differ from the pinned run's"
