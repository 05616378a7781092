"""`i2i export`: generators to ONNX and TorchScript, each file checked against the generator it came from."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from conftest import RECIPES, ROOT, TINY, Result, error_line, run_module
from packages import importable, pip_install
from i2i.storage.checkpoint import part_metadata
from i2i.cli import main
from i2i.tools.export import ParityError, export_module
from i2i.tools.generators import load_generator
from i2i_stock.resnet import ResnetGenerator
from i2i_stock.unet import UnetGenerator

SIZE = 64
EXTRAS = ROOT / "plugins" / "i2i_extras"


def export_cli(*args: object) -> Result:
    """`i2i export ARGS...` in this process, for module-scoped fixtures (the `cli` fixture is per test)."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["export", *map(str, args)])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def assert_passed(result: Result, *labels: str) -> dict[str, float]:
    """The max abs differences the command printed, after checking it passed and listed `labels`."""
    assert result.code == 0, result.err
    found = {m[1]: float(m[2]) for m in re.finditer(r"^  (.+): max abs difference (\S+)$", result.out, re.M)}
    for label in labels:
        assert any(key.startswith(label) for key in found), (label, result.out)
    assert found and max(found.values()) <= 1e-4, result.out
    assert "passed: max abs difference" in result.out
    return found


def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """`net` with every weight, bias and batch-norm statistic moved at random, as training leaves them."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
    return net.eval()


def save_generator(net: nn.Module, options: dict, path: Path) -> Path:
    """A generator file as a checkpoint holds it: its weights and the part name and options to rebuild it."""
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, path, metadata=part_metadata("generator", type(net).name, options))
    return path


def onnx_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])


def torchscript_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(x)


def reference(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return generator(x)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained CycleGAN run (ResNet generators) whose synthetic test split gives held-out images."""
    folder = tmp_path_factory.mktemp("export") / "run"
    main(["run", str(RECIPES / "quickstart.toml"), *TINY, "--set", "train.max_steps=2", "--out", str(folder)])
    return folder


@pytest.fixture(scope="module")
def run_exports(run, tmp_path_factory) -> dict[str, tuple[Path, Result]]:
    """The run's AtoB generator exported to both formats at 64 px, through the CLI."""
    folder = tmp_path_factory.mktemp("run-exports")
    exports = {}
    for fmt, name in (("onnx", "g.onnx"), ("torchscript", "g.pt")):
        exports[fmt] = folder / name, export_cli(run, "--format", fmt, "--out", folder / name, "--size", SIZE)
    return exports


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_resnet_run_exports_and_the_file_matches(run, run_exports, fmt):
    out, result = run_exports[fmt]
    differences = assert_passed(result, "uniform noise 1x3x64x64", "smooth image", "negative smooth image",
                                "held-out image 1", "held-out image 3")
    assert len(differences) == 6
    assert f"exported generator resnet (AtoB) to {out}" in result.out
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    generator = load_generator(run, "AtoB")
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    got = onnx_output(out, x) if fmt == "onnx" else torchscript_output(out, x)
    assert (got - reference(generator, x)).abs().max() <= 1e-4


def test_a_runs_generator_file_keeps_its_direction(cli, run, tmp_path):
    g_b = run / "checkpoints" / "step-00000002" / "G_B.safetensors"  # BtoA, as its training.json says
    result = cli("export", g_b, "--format", "torchscript", "--out", tmp_path / "g.pt", "--size", SIZE)
    assert_passed(result, "held-out image 1")  # of domain B
    assert "exported generator resnet (BtoA)" in result.out


def test_unet_to_both_formats(cli, tmp_path):
    options = {"downs": 6, "channels": 4, "norm": "batch", "dropout": True}  # 2**6 = 64 px; dropout off in eval
    net = randomised(UnetGenerator(**options))
    file = save_generator(net, options, tmp_path / "unet.safetensors")
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    for fmt, out in (("onnx", tmp_path / "unet.onnx"), ("torchscript", tmp_path / "unet.pt")):
        result = cli("export", file, "--format", fmt, "--out", out, "--size", SIZE)
        assert_passed(result, "uniform noise 1x3x64x64", "smooth image")
        assert "no held-out images" in result.err  # a file outside a run: random and synthetic inputs only
        if fmt == "torchscript":  # a fixed-size ONNX file takes a batch of one only
            assert (torchscript_output(out, x) - reference(net, x)).abs().max() <= 1e-4
    assert (onnx_output(tmp_path / "unet.onnx", x[:1]) - reference(net, x[:1])).abs().max() <= 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, nn.Module]:
    """Reference-code weights (latest_net_G_A.pth) converted by `i2i convert`, and the network they came from."""
    folder = tmp_path_factory.mktemp("converted")
    net = randomised(ResnetGenerator(channels=4, blocks=2), seed=1)
    torch.save(net.state_dict(), folder / "latest_net_G_A.pth")
    file = folder / "horse2zebra.safetensors"
    with redirect_stdout(StringIO()):
        main(["convert", str(folder / "latest_net_G_A.pth"), "--out", str(file)])
    return file, net


@pytest.fixture(scope="module")
def dynamic_onnx(converted, tmp_path_factory) -> tuple[Path, Result]:
    file, _ = converted
    out = tmp_path_factory.mktemp("dynamic") / "h2z.onnx"
    return out, export_cli(file, "--format", "onnx", "--out", out, "--size", SIZE, "--dynamic")


def test_converted_weights_dynamic_onnx_runs_at_two_sizes(converted, dynamic_onnx):
    _, net = converted
    out, result = dynamic_onnx
    assert_passed(result, "uniform noise 1x3x64x64", "uniform noise 2x3x68x72")  # the second size is checked too
    assert "free batch, height and width" in result.out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [d for d in session.get_inputs()[0].shape] == ["batch", 3, "height", "width"]
    for shape in ((1, 3, 64, 64), (2, 3, 48, 80)):
        x = torch.rand(*shape) * 2 - 1
        got = torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])
        assert got.shape == x.shape
        assert (got - reference(net, x)).abs().max() <= 1e-4


def test_converted_weights_to_torchscript(cli, converted, tmp_path):
    file, net = converted
    result = cli("export", file, "--format", "torchscript", "--out", tmp_path / "h2z.pt", "--size", SIZE,
                 "--dynamic")
    assert_passed(result, "uniform noise 2x3x68x72")
    x = torch.rand(1, 3, 40, 52) * 2 - 1  # a traced generator takes other sizes of its multiple too
    assert (torchscript_output(tmp_path / "h2z.pt", x) - reference(net, x)).abs().max() <= 1e-4


def test_upsample_generator_of_i2i_extras(tmp_path):
    # Installed into a folder of its own (tests/packages.py), never into the environment running the tests.
    site = tmp_path / "site"
    env = pip_install(site, EXTRAS)
    with importable(site, "i2i_extras"):
        from i2i_extras.upsample import UpsampleGenerator

        options = {"blocks": 1, "channels": 4, "mode": "bilinear"}
        file = save_generator(randomised(UpsampleGenerator(**options)), options, tmp_path / "up.safetensors")
    for fmt, out in (("onnx", tmp_path / "up.onnx"), ("torchscript", tmp_path / "up.pt")):
        result = run_module("export", file, "--format", fmt, "--out", out, "--size", SIZE, env=env)
        assert "exported generator upsample" in result.out, result.err
        assert_passed(result, "uniform noise 1x3x64x64", "smooth image")


# ---------------------------------------------------------------------------------------------------------
# Exports that must fail


class Branchy(nn.Module):
    """A generator whose forward takes a Python branch on the image's brightness: tracing records one branch only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        return y if x.mean() > 0 else -y


class Drift(nn.Module):
    """A generator that adds `drift` to its output while it is traced or exported: an exporter that lost accuracy."""

    def __init__(self, drift: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.drift = nn.Conv2d(3, 3, 3, padding=1), drift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        return y + self.drift if torch.compiler.is_exporting() or torch.jit.is_tracing() else y


def test_a_branch_frozen_by_tracing_is_caught(tmp_path):
    out = tmp_path / "branchy.pt"
    with pytest.raises(ParityError, match=r"parity check failed: .* above the tolerance 0\.0001") as caught:
        export_module(Branchy(), "torchscript", out, size=32)
    # The bright smooth image and its dark negative take different branches: one of them differs by ~1.
    assert max(caught.value.differences.values()) > 0.1
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_onnx_refuses_data_dependent_control_flow_in_one_line(tmp_path):
    with pytest.raises(Exception, match="cannot export the generator to ONNX: .*data-dependent") as caught:
        export_module(Branchy(), "onnx", tmp_path / "branchy.onnx", size=32)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_off_by_more_than_the_tolerance_fails(tmp_path, fmt):
    with pytest.raises(ParityError, match=r"by up to 0\.001 .* above the tolerance 0\.0001"):
        export_module(Drift(1e-3), fmt, tmp_path / "drift", size=32)
    assert list(tmp_path.iterdir()) == []


def test_an_export_within_the_tolerance_passes(tmp_path):
    report = export_module(Drift(1e-5), "torchscript", tmp_path / "drift.pt", size=32)
    assert 5e-6 < report.max_difference < 2e-5 and (tmp_path / "drift.pt").is_file()
    with pytest.raises(ParityError):
        export_module(Drift(1e-5), "torchscript", tmp_path / "strict.pt", size=32, tolerance=1e-6)


def test_cli_failed_check_keeps_the_previous_file(cli, converted, tmp_path, monkeypatch):
    file, _ = converted
    out = tmp_path / "g.pt"
    out.write_bytes(b"the previous export")
    monkeypatch.setattr("i2i.tools.generators.load_generator", lambda *args, **kwargs: Drift(1e-3))
    line = error_line(cli("export", file, "--format", "torchscript", "--out", out, "--size", 32))
    assert "parity check failed" in line and "0.001" in line and "tolerance 0.0001" in line and str(out) in line
    assert out.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]


def test_missing_onnxruntime_names_the_extra(cli, converted, tmp_path, monkeypatch):
    file, _ = converted
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    line = error_line(cli("export", file, "--format", "onnx", "--out", tmp_path / "g.onnx"))
    assert "onnxruntime" in line and 'pip install "i2i-toolkit[export]"' in line
    assert not (tmp_path / "g.onnx").exists()


@pytest.mark.parametrize("args, expected", [
    (["--size", "30"], "--size 30 must be a positive multiple of 4"),
    (["--direction", "sideways"], "sideways"),
])
def test_bad_options_get_one_line(cli, run, tmp_path, args, expected):
    line = error_line(cli("export", run, "--format", "torchscript", "--out", tmp_path / "g.pt", *args))
    assert expected in line
    assert not (tmp_path / "g.pt").exists()


# ---------------------------------------------------------------------------------------------------------
# The README's onnxruntime snippet


def readme_snippet() -> str:
    """The Python block of the README's Export section (the one this test keeps true)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Export"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_snippet(folder: Path) -> subprocess.CompletedProcess:
    """The snippet in a fresh interpreter in which torch and i2i cannot be imported."""
    (folder / "snippet.py").write_text(readme_snippet(), encoding="utf-8")
    block = "import sys; sys.modules.update(torch=None, i2i=None); exec(open('snippet.py').read())"
    return subprocess.run([sys.executable, "-c", block], cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("which", ["fixed", "dynamic"])
def test_readme_snippet_translates_like_the_generator(run, run_exports, converted, dynamic_onnx, tmp_path, which):
    if which == "fixed":
        model, generator, size = run_exports["onnx"][0], load_generator(run, "AtoB"), (37, 23)
    else:
        model, generator, size = dynamic_onnx[0], converted[1], (48, 36)  # a multiple of 4: taken as it is
    shutil.copy(model, tmp_path / "horse2zebra.onnx")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / "horse.jpg")
    done = run_snippet(tmp_path)
    assert done.returncode == 0, done.stderr
    image = Image.open(tmp_path / "horse.jpg").convert("RGB")
    if which == "fixed":
        image = image.resize((SIZE, SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    expected = ((reference(generator, x)[0] + 1) * 127.5).clamp(0, 255).round().permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(tmp_path / "zebra.png")).astype(np.float32)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1


def test_the_cli_default_tolerance_is_the_documented_one():
    from i2i.cli import export
    from i2i.tools.export import TOLERANCE

    assert TOLERANCE == 1e-4 and next(p for p in export.params if p.name == "tolerance").default == TOLERANCE
    assert "Tolerance.** The default `--tolerance` is 1e-4" in (ROOT / "README.md").read_text(encoding="utf-8")
