"""The timm parts: the `timm_unet` generator on any timm encoder and the `timm` discriminator on a timm backbone's
feature level, their options checked up front, and their starting weights from a local file or timm's hub."""

from __future__ import annotations

import tomllib

import pytest
import torch
from conftest import RECIPES, error_line, run_module
from PIL import Image
from safetensors.torch import load_file, save_file

import i2i
from i2i.errors import I2IError
from i2i.testing import check_part

CYCLEGAN = RECIPES / "cyclegan.toml"
CYCLEGAN_TIMM = RECIPES / "cyclegan_timm.toml"
# 64 px: resnet18's total stride is 32, and its batch norm needs the deepest map to be 2x2 for batches of one.
SMALL = ["--set", "data.name=synthetic", "--set", "data.count=4", "--set", "data.load_size=72",
         "--set", "data.crop_size=64", "--set", "data.workers=0", "--set", "train.max_steps=2",
         "--set", "train.log_every=1", "--set", "train.checkpoint_every=0", "--set", "train.samples=1"]
TIMM_UNET = ["--set", "generator.name=timm_unet", "--set", "generator.backbone=resnet18",
             "--set", "generator.decoder_channels=4"]
SMALL_PATCHGAN = ["--set", "discriminator.channels=4", "--set", "discriminator.layers=2"]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A resnet18 classifier's state dict in timm's layout, as a .safetensors file, with its tensors."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)  # weights unlike those any part draws under the runs' seeds
        state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(state, path)
    return path, state


def _parameters(net: torch.nn.Module) -> set[str]:
    return {name for name, _ in net.named_parameters()}


@pytest.mark.parametrize(("backbone", "independent"), [("resnet18", False), ("convnext_atto", True)])
def test_timm_unet_keeps_the_part_contract(backbone, independent):
    net = check_part("generator", "timm_unet", size=64, backbone=backbone, decoder_channels=4)
    # Batch norm (resnet) ties samples together in training mode; layer norm (convnext) does not, which
    # check_part has just verified by comparing batched and one-by-one outputs.
    assert (net.size_multiple, net.batch_independent) == (32, independent)
    assert any(name.startswith("encoder.") for name in _parameters(net))


def test_timm_discriminator_keeps_the_part_contract():
    net = check_part("discriminator", "timm", size=64, backbone="resnet18", level=1)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    assert net(images).shape == (2, 1, 16, 16)  # level 1 of resnet18 is 1/4 of the image size
    assert [f.shape[1:] for f in net.features(images)] == [(64, 32, 32), (64, 16, 16)]
    assert not net.batch_independent


def test_output_size_is_the_input_size():
    net = i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4, out_channels=1)
    for size in [(32, 32), (64, 96), (128, 64)]:
        out = net(torch.rand(2, 3, *size) * 2 - 1)
        assert out.shape == (2, 1, *size)
        assert out.abs().max() <= 1  # tanh


def test_sides_that_are_not_multiples_of_the_stride_are_refused():
    net = i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4)
    with pytest.raises(I2IError, match=r"multiples of 32, got 64x70.*i2i translate pads"):
        net(torch.zeros(1, 3, 70, 64))
    with pytest.raises(I2IError, match="at least 64 px or batches of 2"):  # batch norm on a 1x1 map
        net(torch.zeros(1, 3, 32, 32))


def test_cyclegan_trains_with_timm_parts_and_translates_any_size(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", CYCLEGAN, *SMALL, *TIMM_UNET, *SMALL_PATCHGAN, "--out", run)
    assert result.code == 0, result.err
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    assert recipe["generator"]["name"] == "timm_unet" and recipe["generator"]["backbone"] == "resnet18"
    assert any(k.startswith("encoder.layer4.") for k in load_file(run / "checkpoints" / "step-00000002" /
                                                                  "G_A.safetensors"))
    # i2i translate pads a 70x50 image to the encoder's stride (32) and crops back.
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (70, 50), (200, 30, 30)).save(images / "a.png")
    assert cli("translate", run, images, "--out", tmp_path / "out").code == 0
    with Image.open(tmp_path / "out" / "a.png") as translated:
        assert translated.size == (70, 50)


def test_cyclegan_trains_with_the_timm_discriminator(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", CYCLEGAN, *SMALL, "--set", "generator.blocks=1", "--set", "generator.channels=4",
                 "--set", "discriminator.name=timm", "--set", "discriminator.backbone=resnet18",
                 "--set", "discriminator.level=1", "--set", "loss.feature_matching.weight=1", "--out", run)
    assert result.code == 0, result.err
    weights = load_file(run / "checkpoints" / "step-00000002" / "D_A.safetensors")
    assert weights["head.weight"].shape == (1, 64, 1, 1)
    assert not any(k.startswith("encoder.layer2.") for k in weights)  # cut after level 1
    assert "fm_A" in (run / "metrics.jsonl").read_text()


def test_local_weights_become_the_encoder_weights(resnet18_file):
    path, saved = resnet18_file
    net = i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4, weights=str(path))
    encoder = net.encoder.state_dict()
    assert set(encoder) == set(saved) - {"fc.weight", "fc.bias"}  # the classifier head is not part of it
    assert all(torch.equal(encoder[k], saved[k]) for k in encoder)
    fresh = i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4)
    assert not torch.equal(fresh.encoder.conv1.weight, saved["conv1.weight"])
    # The same file starts a discriminator, and a .pth file (read with weights_only) works as well.
    torch.save(saved, path.with_suffix(".pth"))
    disc = i2i.create("discriminator", "timm", level=1, weights=str(path.with_suffix(".pth")))
    assert torch.equal(disc.encoder.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])


def test_the_shipped_recipe_starts_from_a_weights_file_which_translation_does_not_need(cli, tmp_path,
                                                                                         resnet18_file):
    path, saved = resnet18_file
    weights = tmp_path / "copy.safetensors"
    weights.write_bytes(path.read_bytes())
    run = tmp_path / "run"
    # lr 0 keeps the weights the run started from in its checkpoint.
    result = cli("run", CYCLEGAN_TIMM, *SMALL, "--set", "generator.backbone=resnet18",
                 "--set", "generator.decoder_channels=4", "--set", f"generator.weights={weights}",
                 "--set", "optim.lr=0", *SMALL_PATCHGAN, "--out", run)
    assert result.code == 0, result.err
    stored = load_file(run / "checkpoints" / "step-00000002" / "G_A.safetensors")
    params = _parameters(i2i.create("generator", "timm_unet", backbone="resnet18", decoder_channels=4).encoder)
    assert params and all(torch.equal(stored[f"encoder.{k}"], saved[k]) for k in params)
    # The checkpoint holds the weights, so rebuilding it for translation needs the file no more.
    weights.unlink()
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64), (10, 90, 200)).save(images / "b.png")
    result = cli("translate", run, images, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    # nor does continuing the run: --resume takes the weights from the checkpoint
    result = cli("run", CYCLEGAN_TIMM, *SMALL, "--set", "generator.backbone=resnet18",
                 "--set", "generator.decoder_channels=4", "--set", f"generator.weights={weights}",
                 "--set", "optim.lr=0", *SMALL_PATCHGAN, "--set", "train.max_steps=3", "--out", run, "--resume")
    assert result.code == 0, result.err
    assert (run / "checkpoints" / "step-00000003").is_dir()


def test_a_weights_file_of_another_model_is_refused(tmp_path):
    import timm

    other = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("convnext_atto").state_dict().items()}, other)
    with pytest.raises(I2IError, match=rf"\[generator\] weights = \"{other}\" does not hold timm's resnet18"
                                       r" weights: 20 of the backbone's 20 .* \(e\.g\. conv1\.weight\)"):
        i2i.create("generator", "timm_unet", backbone="resnet18", weights=str(other))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(I2IError, match=rf"\[discriminator\] weights = \"{damaged}\": it is not a readable"):
        i2i.create("discriminator", "timm", weights=str(damaged))


def test_an_unknown_backbone_gets_the_closest_timm_names(cli, tmp_path):
    run = tmp_path / "run"
    line = error_line(cli("run", CYCLEGAN, *SMALL, *TIMM_UNET, "--set", "generator.backbone=resnet19",
                          "--out", run))
    assert 'backbone = "resnet19" is not a timm model: did you mean resnet18, ' in line
    assert "timm.list_models()" in line and "[generator]" in line
    assert not run.exists()  # refused before anything is written
    with pytest.raises(I2IError, match=r"\[discriminator\] backbone = \"convnext_nan\" .* convnext_nano"):
        i2i.create("discriminator", "timm", backbone="convnext_nan")


def test_options_are_checked_before_anything_is_built(cli, tmp_path):
    run = tmp_path / "run"
    line = error_line(cli("run", CYCLEGAN, *SMALL, "--set", "discriminator.name=timm",
                          "--set", "discriminator.backbone=convnext_atto", "--set", "discriminator.level=4",
                          "--out", run))
    assert "[discriminator] level = 4 is out of range: convnext_atto has 4 feature levels (0-3, reductions" \
           " 4, 8, 16, 32)" in line
    missing = tmp_path / "nowhere.safetensors"
    line = error_line(cli("run", CYCLEGAN, *SMALL, *TIMM_UNET, "--set", f"generator.weights={missing}",
                          "--out", run))
    assert f'[generator] weights = "{missing}": {missing} does not exist' in line
    line = error_line(cli("run", CYCLEGAN, *SMALL, *TIMM_UNET, "--set", "generator.pretrained=true",
                          "--set", "generator.backbone=resnet18.nosuchtag", "--out", run))
    assert "no weights tagged 'nosuchtag' for resnet18 (its tags: a1_in1k" in line
    assert not run.exists()


def test_pretrained_without_network_is_one_clear_line(tmp_path):
    # No hub access: offline mode makes the failure immediate, the empty cache folders that it cannot be found.
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    run = tmp_path / "run"
    result = run_module("run", CYCLEGAN, *SMALL, *TIMM_UNET, *SMALL_PATCHGAN, "--set", "generator.pretrained=true",
                        "--out", run, env=env)
    line = error_line(result)
    assert "[generator] pretrained = true: cannot get timm's weights for 'resnet18' from the Hugging Face hub" in line
    assert 'set weights = "path/to/it" instead' in line
    assert not (run / "checkpoints").exists()


def test_info_lists_the_options_and_points_at_timm_list_models(cli):
    result = cli("info", "generator", "timm_unet")
    assert result.code == 0, result.err
    for option in ("backbone", "pretrained", "weights", "decoder_channels", "norm", "in_channels", "out_channels"):
        assert option in result.out
    assert "timm.list_models" in result.out
    result = cli("info", "discriminator", "timm")
    assert result.code == 0 and "level" in result.out and "timm.list_models" in result.out
