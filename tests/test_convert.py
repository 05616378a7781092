"""`i2i convert`: reference .pth generator checkpoints in, i2i .safetensors out; malicious pickles refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from conftest import error_line
from i2i.tools.convert import convert
from i2i.errors import I2IError
from i2i_stock.patchgan import PatchGANDiscriminator
from i2i_stock.resnet import ResnetGenerator


def reference_generator(seed: int = 0, **options) -> ResnetGenerator:
    """A ResnetGenerator with random weights everywhere (biases too), as a trained reference net would have."""
    torch.manual_seed(seed)
    net = ResnetGenerator(**{"channels": 4, "blocks": 2, **options})
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return net.eval()


def with_stale_instance_norm_stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the running stats PyTorch < 0.4 saved for instance norms (model.2 and model.10.conv_block.2 are ones)."""
    state = dict(state)
    state["model.2.running_mean"], state["model.2.running_var"] = torch.zeros(4), torch.ones(4)
    state["model.10.conv_block.2.running_mean"] = torch.zeros(16)
    state["model.10.conv_block.2.running_var"] = torch.ones(16)
    state["model.10.conv_block.2.num_batches_tracked"] = torch.tensor(0)
    return state


def metadata(path: Path) -> dict[str, str]:
    with safe_open(path, framework="pt") as f:
        return f.metadata()


def test_convert_then_translate_matches_the_original_network(cli, tmp_path):
    net = reference_generator()
    pth = tmp_path / "latest_net_G_A.pth"
    torch.save(with_stale_instance_norm_stats(net.state_dict()), pth)
    out = tmp_path / "horse2zebra.safetensors"
    result = cli("convert", pth, "--out", out)
    assert result.code == 0, result.err
    assert "resnet" in result.out and "blocks=2" in result.out and "channels=4" in result.out
    meta = metadata(out)
    options = json.loads(meta["i2i.options"])
    assert meta["i2i.kind"] == "generator" and meta["i2i.name"] == "resnet"
    assert meta["i2i.source"] == "latest_net_G_A.pth"
    assert (options["blocks"], options["channels"], options["norm"], options["dropout"]) == (2, 4, "instance", False)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    translated = cli("translate", out, tmp_path / "photo.png", "--out", tmp_path / "out")
    assert translated.code == 0, translated.err
    got = np.asarray(Image.open(tmp_path / "out" / "photo.png")).astype(np.int16)
    x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        y = net(F.pad(x, (0, 3, 0, 1), mode="reflect"))[0, :, :23, :37]
    expected = ((y + 1) / 2).clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("options", [
    {"norm": "instance", "dropout": True},
    {"norm": "batch", "dropout": False},
    {"norm": "batch", "dropout": True},
    {"norm": "none", "dropout": False},
    {"blocks": 0},
    {"blocks": 3, "in_channels": 1, "out_channels": 2},
])
def test_options_are_recognised_from_the_key_layout(tmp_path, options):
    net = reference_generator(**options)
    expected = {"blocks": 2, "channels": 4, "norm": "instance", "dropout": False, "in_channels": 3,
                "out_channels": 3, **options}
    assert ResnetGenerator.options_from_state_dict(net.state_dict()) == expected
    torch.save(net.state_dict(), tmp_path / "net.pth")
    result = convert(tmp_path / "net.pth", tmp_path / "net.safetensors")
    assert (result.name, result.options, result.tensors) == ("resnet", expected, len(net.state_dict()))


def test_other_layouts_are_not_claimed_by_the_resnet():
    assert ResnetGenerator.options_from_state_dict(PatchGANDiscriminator(channels=4).state_dict()) is None
    assert ResnetGenerator.options_from_state_dict({"model.1.weight": torch.zeros(4, 3, 7, 7)}) is None


@pytest.mark.parametrize("wrap", ["state_dict", "module.", "both"])
def test_wrapped_and_data_parallel_state_dicts(cli, tmp_path, wrap):
    state = reference_generator().state_dict()
    if wrap in ("module.", "both"):
        state = {f"module.{k}": v for k, v in state.items()}
    saved = {"state_dict": state, "epoch": 200} if wrap in ("state_dict", "both") else state
    torch.save(saved, tmp_path / "g.pth")
    result = cli("convert", tmp_path / "g.pth")  # --out defaults to the same name, .safetensors
    assert result.code == 0, result.err
    assert metadata(tmp_path / "g.safetensors")["i2i.name"] == "resnet"


class Exploit:
    """Unpickling this object would run a shell command: what a malicious .pth does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_malicious_pickle_is_refused_without_running_it(cli, tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_net_G_A.pth"
    with evil.open("wb") as f:
        pickle.dump({"model.1.weight": Exploit(marker)}, f, protocol=protocol)
    result = cli("convert", evil, "--out", tmp_path / "out.safetensors")
    line = error_line(result)
    assert "evil_net_G_A.pth" in line and "not a plain state dict of tensors" in line and "refused to unpickle" in line
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.safetensors").exists()


def test_a_state_dict_no_generator_recognises(cli, tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    line = error_line(cli("convert", tmp_path / "other.pth", "--out", tmp_path / "x.safetensors"))
    assert "no installed generator recognises" in line and "other.pth" in line and "resnet" in line


def test_a_resnet_layout_with_wrong_shapes_is_rejected(tmp_path):
    state = reference_generator().state_dict()
    state["model.4.weight"] = torch.zeros(9, 4, 3, 3)  # the first downsampling conv, with the wrong width
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(I2IError, match="no installed generator recognises.*resnet with .*does not load"):
        convert(tmp_path / "bad.pth", tmp_path / "bad.safetensors")


@pytest.mark.parametrize("what, expected", [
    ("missing", "does not exist"),
    ("text", "not a readable PyTorch checkpoint"),
    ("tensor", "not a plain state dict of tensors"),
])
def test_bad_files_get_one_line(cli, tmp_path, what, expected):
    path = tmp_path / "latest_net_G_A.pth"
    if what == "text":
        path.write_text("hello")
    elif what == "tensor":
        torch.save(torch.zeros(3), path)
    line = error_line(cli("convert", path, "--out", tmp_path / "out.safetensors"))
    assert expected in line and "latest_net_G_A.pth" in line, line
