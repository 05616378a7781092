"""Inception v3 features from a local weights file, for FID and KID: the two FID protocols.

Both protocols (FID_PROTOCOLS) give 2048-d average-pool features:
- "standard": the TF-Inception of pytorch-fid and torch-fidelity, run by torch-fidelity's
  FeatureExtractorInceptionV3, which also does their TF1-style bilinear resize to 299 x 299. That network takes
  8-bit images, so the [0, 1] images are quantised first as saving them to PNG would: (x * 255).round(), clamped
  to 0..255. With pytorch-fid's published weights (pt_inception-2015-12-05-6726825d.pth) the numbers compare with
  published FIDs (e.g. CUT's, with its CycleGAN baselines); with any other weights they do not.
- "torchvision": torchvision's ImageNet Inception v3 on the float images, antialiased bilinear resize to
  299 x 299. Such FIDs compare between runs measured alike, not with published ones.

Nothing here downloads: `i2i download inception` fetches the files (download_command names it).
"""

from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i.errors import I2IError, first_line
from i2i.storage.cache import INCEPTION_FILES
from i2i.storage.digests import file_sha256
from i2i.storage.weights import read_weights

__all__ = ["FID_PROTOCOLS", "INCEPTION_FILE", "STANDARD_FILE", "InceptionFeatures", "StandardInceptionFeatures",
           "download_command", "fid_protocol_note", "inception_protocol", "load_inception"]

#: the FID protocols, the default first: "standard" (TF-Inception, comparable with papers) and "torchvision"
FID_PROTOCOLS = ("standard", "torchvision")
#: torchvision's ImageNet Inception v3 (Inception_V3_Weights.IMAGENET1K_V1), the weights of the torchvision protocol
INCEPTION_FILE = INCEPTION_FILES["torchvision"]
#: pytorch-fid's TF-Inception (torch-fidelity's network loads it), the weights of the standard protocol
STANDARD_FILE = INCEPTION_FILES["standard"]
#: the classes of the TF-Inception's classifier (ImageNet's 1000 and 8 unused): what tells its weights apart
TF_CLASSES = 1008


class _Frozen(nn.Module):
    """A feature network wrapped to stay in eval mode: batch-norm statistics and dropout must not change features."""

    num_features = 2048

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.eval()

    def train(self, mode: bool = True) -> "_Frozen":
        """Always in eval mode."""
        return super().train(False)


class InceptionFeatures(_Frozen):
    """torchvision's Inception v3 up to its 2048-d average pool, on [0, 1] images resized to 299 x 299."""

    protocol = "torchvision"

    def forward(self, images: Tensor) -> Tensor:
        """(N, 2048) features of (N, 3, H, W) images in [0, 1]."""
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        # The Google weights expect [-1, 1]: what torchvision's transform_input makes of ImageNet-normalised input.
        return self.net(x * 2 - 1)


class StandardInceptionFeatures(_Frozen):
    """The TF-Inception's 2048-d pool features (torch-fidelity's network and resize) of [0, 1] images, as 8-bit."""

    protocol = "standard"

    def forward(self, images: Tensor) -> Tensor:
        """(N, 2048) features of (N, 3, H, W) images in [0, 1]."""
        # The network takes 8-bit images (and resizes them itself, as pytorch-fid and torch-fidelity do): rounded
        # as a saved PNG holds them, so measuring images in memory equals measuring their files.
        pixels = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
        (features,) = self.net(pixels)
        return features


def inception_protocol(state: dict[str, Tensor]) -> str:
    """The FID protocol a weights state dict is laid out for: "standard" when its classifier has the TF-Inception's
    1008 outputs, else "torchvision" (whose loader then checks the rest)."""
    fc = state.get("fc.weight")
    return "standard" if isinstance(fc, Tensor) and fc.ndim == 2 and fc.shape[0] == TF_CLASSES else "torchvision"


def download_command(protocol: str) -> str:
    """The command that puts the weights of FID `protocol` into the cache."""
    return "i2i download inception" + (" --kind torchvision" if protocol == "torchvision" else "")


def _weights_hint(protocol: str | None) -> str:
    """Which file to pass, and the command that fetches it, for `protocol` (None: either)."""
    standard = f"the TF-Inception {STANDARD_FILE} (`{download_command('standard')}`)"
    torchvision = f"torchvision's {INCEPTION_FILE} (`{download_command('torchvision')}`)"
    wanted = {"standard": standard, "torchvision": torchvision}.get(protocol, f"{standard} or {torchvision}")
    return f"pass {wanted}, as a .pth or .safetensors file"


def load_inception(path: Path | str, protocol: str | None = None, *,
                   source: str = "--inception-weights") -> InceptionFeatures | StandardInceptionFeatures:
    """The Inception feature network of FID `protocol` with the weights in `path`; None: the protocol the file's
    layout is for (see inception_protocol).

    `path` is a .safetensors file or a .pth/.pt read with torch.load(weights_only=True): pytorch-fid's
    pt_inception-2015-12-05-6726825d.pth for "standard", torchvision's inception_v3_google-0cc3c7bd.pth for
    "torchvision". Nothing is ever downloaded. A missing, unreadable or mismatched file is an I2IError naming it
    (as `source`, e.g. the option it came from) and the file that fits.
    """
    if protocol is not None and protocol not in FID_PROTOCOLS:
        raise I2IError(f"FID protocol {protocol!r} is not one of {', '.join(FID_PROTOCOLS)}")
    if protocol == "standard":
        _torch_fidelity_inception()  # without torch-fidelity, fail before reading 100 MB
    path = Path(path).expanduser()
    try:
        state = read_weights(path)
    except I2IError as exc:
        raise I2IError(f"cannot read {source} {exc}; {_weights_hint(protocol)}") from None
    found = inception_protocol(state)
    if (protocol or found) == "standard":
        return _load_standard(path, state, source)
    if found == "standard":  # torchvision asked for, the TF-Inception given
        raise I2IError(f"{source} {path} looks like the TF-Inception of the standard FID protocol ({TF_CLASSES}"
                       f" classes, as in pytorch-fid or torch-fidelity), not torchvision's inception_v3 that the"
                       f" torchvision protocol needs: measure the standard protocol with it, or"
                       f" {_weights_hint('torchvision')}")
    return _load_torchvision(path, state, source, inferred=protocol is None)


def _load_torchvision(path: Path, state: dict[str, Tensor], source: str, inferred: bool) -> InceptionFeatures:
    """torchvision's inception_v3 with `state` loaded (the torchvision protocol)."""
    from torchvision.models import Inception3  # imported here: only FID/KID need it

    # A file of neither layout lands here when the protocol was inferred: name both files then.
    hint = _weights_hint(None if inferred else "torchvision")
    # The classifier and the auxiliary head are not used for features; files may hold them or not.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    net = Inception3(num_classes=1000, aux_logits=False, transform_input=False, init_weights=False)
    net.fc = nn.Identity()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise I2IError(f"{source} {path} does not fit torchvision's inception_v3: {first_line(exc)}; {hint}"
                       ) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        problem = (f"{len(missing)} of its tensors are missing (e.g. {missing[0]})" if missing
                   else f"it holds {len(unexpected)} tensors inception_v3 has not (e.g. {unexpected[0]})")
        raise I2IError(f"{source} {path} is not torchvision's inception_v3 state dict: {problem}; {hint}")
    return InceptionFeatures(net)


def _torch_fidelity_inception() -> type[nn.Module]:
    """torch-fidelity's FeatureExtractorInceptionV3, or an I2IError saying how to install it."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise I2IError('the standard FID protocol needs torch-fidelity: pip install "i2i-toolkit[fid]" (or measure the'
                       " torchvision protocol: --fid torchvision, or callback.validation.fid=torchvision)") from None
    return FeatureExtractorInceptionV3


@lru_cache(maxsize=1)
def _standard_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor torch-fidelity's TF-Inception holds, by name and shape (built on the meta device: no memory)."""
    base = _torch_fidelity_inception()

    class Skeleton(base):  # type: ignore[misc, valid-type]
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            return None  # only the layout is wanted here

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        skeleton = Skeleton(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=empty)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _load_standard(path: Path, state: dict[str, Tensor], source: str) -> StandardInceptionFeatures:
    """torch-fidelity's TF-Inception with `state` loaded (the standard protocol), after checking its layout."""
    extractor = _torch_fidelity_inception()
    expected = _standard_shapes()
    problem = _standard_layout_problem(state, expected)
    if problem:
        raise I2IError(f"{source} {path} is not the TF-Inception of the standard FID protocol: {problem};"
                       f" {_weights_hint('standard')}")
    # Never unpickle an untrusted file: torch-fidelity reads its weights with an unrestricted torch.load, which
    # runs whatever code a pickle holds. It gets bytes we have just written from the checked tensors instead (read
    # from the user's file by read_weights: safetensors, or torch.load(weights_only=True)).
    checked = io.BytesIO()
    torch.save({k: v for k, v in state.items() if k in expected}, checked)
    checked.seek(0)
    try:
        net = extractor(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=checked)
    except RuntimeError as exc:  # a dtype or value the layout check cannot see
        raise I2IError(f"{source} {path} does not load into torch-fidelity's TF-Inception: {first_line(exc)};"
                       f" {_weights_hint('standard')}") from None
    return StandardInceptionFeatures(net)


def _standard_layout_problem(state: dict[str, Tensor], expected: dict[str, tuple[int, ...]]) -> str:
    """What keeps `state` from being the TF-Inception's weights ("" if nothing): the classifier first, as it tells
    torchvision's inception_v3 apart."""
    size = lambda shape: "x".join(map(str, shape))  # noqa: E731
    fc = state.get("fc.weight")
    if isinstance(fc, Tensor) and tuple(fc.shape) != expected["fc.weight"]:
        torchvision = " (torchvision's inception_v3 has 1000: measure the torchvision protocol with it)"
        return (f"its classifier fc.weight is {size(fc.shape)}, not {size(expected['fc.weight'])}"
                + (torchvision if fc.ndim == 2 and fc.shape[0] == 1000 else ""))
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        return f"{len(missing)} of its tensors are missing (e.g. {missing[0]})"
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        return f"it holds {len(unexpected)} tensors the TF-Inception has not (e.g. {unexpected[0]})"
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if wrong:
        return f"{wrong[0]} is {size(state[wrong[0]].shape)}, not {size(expected[wrong[0]])}"
    return ""


def fid_protocol_note(protocol: str, weights: Path | str, sha256: str | None = None) -> str:
    """What metrics.json's "features" and `i2i evaluate` say about the FID measured: the protocol, the weights and
    whether the numbers compare with published FIDs (the standard protocol with pytorch-fid's published file,
    recognised by its sha256; `sha256` None: read from `weights`)."""
    if protocol != "standard":
        return (f"FID protocol: torchvision (ImageNet Inception v3 of torchvision, weights {weights}): NOT comparable"
                " with published FIDs")
    published = re.search(r"-([0-9a-f]{8,})\.pth$", STANDARD_FILE).group(1)  # hub style: name-<sha256 prefix>.pth
    sha256 = file_sha256(weights) if sha256 is None else sha256
    where = f"FID protocol: standard (TF-Inception of pytorch-fid/torch-fidelity, weights {weights})"
    if sha256.startswith(published):
        return f"{where}: comparable with published FIDs"
    # Random or retrained weights of the same layout give numbers of another scale: say so rather than mislead.
    return (f"{where}: NOT comparable with published FIDs, as the file is not pytorch-fid's {STANDARD_FILE} (its"
            f" sha256 starts {sha256[:8]}, not {published}; `{download_command('standard')}` fetches that one)")
