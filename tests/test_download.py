"""`i2i download`: datasets, published generators and Inception weights from a real HTTP server on 127.0.0.1 that
serves fabricated files under the catalogue's paths (the mirror option points there); every failure is one line
and leaves nothing half-written."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import RECIPES, error_line, run_module
from file_server import FileServer, refused_url
from i2i.storage.cache import INCEPTION_FILES, inception_path
from i2i.tools.download import KINDS, entries, lookup
from i2i.tools.download.archives import BadArchive, extract
from i2i.tools.download.transfer import human_size
from i2i_stock.datasets import draw_synthetic
from test_convert import reference_generator

pytestmark = pytest.mark.usefixtures("one_thread")

H2Z = "/cyclegan/datasets/horse2zebra.zip"
FACADES = "/pix2pix/datasets/facades.tar.gz"
MODEL = "/cyclegan/pretrained_models/horse2zebra.pth"
FID = "/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
TINY_RUN = ["--set", "data.load_size=36", "--set", "data.crop_size=32", "--set", "data.workers=0",
            "--set", "generator.channels=4", "--set", "discriminator.channels=4", "--set", "train.max_steps=2", "--set", "train.log_every=1",
            "--set", "train.checkpoint_every=0", "--set", "train.samples=1"]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(seed: int, size: int = 40) -> bytes:
    """A PNG of noise: it does not compress, so archives of it have the size of their images."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return png(Image.fromarray(pixels))


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buffer.getvalue()


def horse2zebra_zip(noise: int = 0) -> bytes:
    """The reference's archive layout, tiny: horse2zebra/trainA, trainB, testA, testB (plus `noise` noise PNGs)."""
    files = {f"horse2zebra/{sub}/{i}.png": png(draw_synthetic(3, sub[:-1], sub[-1], i, 40))
             for sub, count in {"trainA": 3, "trainB": 3, "testA": 2, "testB": 1}.items() for i in range(count)}
    files.update({f"horse2zebra/trainA/noise{i}.png": noise_png(i) for i in range(noise)})
    return zip_bytes(files)


def facades_tar() -> bytes:
    """The reference's pix2pix layout, tiny: facades/train, val, test of A|B images side by side."""
    def pair(i: int) -> bytes:
        both = Image.new("RGB", (80, 40))
        both.paste(draw_synthetic(5, "train", "A", i, 40), (0, 0))
        both.paste(draw_synthetic(5, "train", "B", i, 40), (40, 0))
        return png(both)

    return tar_bytes({f"facades/{split}/{i}.png": pair(i) for split in ("train", "val", "test") for i in range(2)})


def files_under(root: Path) -> list[str]:
    """Every file (and link) under `root`, hidden ones too: what a failed download must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


def test_a_dataset_arrives_in_the_layout_run_trains_on_and_a_second_call_fetches_nothing(cli, server, tmp_path):
    server.files[H2Z] = horse2zebra_zip()
    root = tmp_path / "data"
    result = cli("download", "dataset", "horse2zebra", "--root", root, "--url", server.url)
    assert result.code == 0, result.err
    folder = root / "cyclegan" / "horse2zebra"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["testA", "testB", "trainA", "trainB"]
    assert len(list((folder / "trainA").glob("*.png"))) == 3
    assert files_under(root / ".downloads") == []  # the archive is gone once unpacked
    assert f"into {folder}: testA 2, testB 1, trainA 3, trainB 3 images" in result.out
    digest = hashlib.sha256(server.files[H2Z]).hexdigest()
    assert f"sha256 {digest} (upstream publishes none: pin this one next time with --sha256 {digest})" in result.out
    marker = json.loads((folder / ".i2i-download.json").read_text())
    assert marker["sha256"] == digest and marker["url"] == server.url + H2Z

    train = next(line for line in result.out.splitlines() if line.startswith("train on it: "))
    assert train == f"train on it: i2i run recipes/cyclegan.toml --set data.root={folder}"
    args = train.removeprefix("train on it: i2i ").split()
    args[1] = str(RECIPES / "cyclegan.toml")
    run = cli(*args, *TINY_RUN, "--set", "generator.blocks=1", "--out", tmp_path / "run")
    assert run.code == 0, run.err
    assert (tmp_path / "run" / "checkpoints").is_dir()

    requests = len(server.served.requests)
    again = cli("download", "dataset", "cyclegan/horse2zebra", "--root", root, "--url", server.url)
    assert again.code == 0, again.err
    assert f"cyclegan/horse2zebra is already in {folder} (nothing fetched)" in again.out
    assert len(server.served.requests) == requests


def test_a_pix2pix_dataset_arrives_aligned_with_its_direction(cli, server, tmp_path):
    server.files[FACADES] = facades_tar()
    result = cli("download", "dataset", "pix2pix/facades", "--root", tmp_path, "--url", server.url,
                 "--sha256", hashlib.sha256(server.files[FACADES]).hexdigest())
    assert result.code == 0, result.err
    folder = tmp_path / "pix2pix" / "facades"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["test", "train", "val"]
    assert "verified: sha256 " in result.out
    train = next(line for line in result.out.splitlines() if line.startswith("train on it: "))
    assert train.endswith(f"--set data.root={folder} --set data.direction=BtoA")
    args = train.removeprefix("train on it: i2i ").split()
    args[1] = str(RECIPES / "pix2pix.toml")
    run = cli(*args, *TINY_RUN, "--set", "generator.downs=5", "--out", tmp_path / "run")
    assert run.code == 0, run.err


def test_the_environment_variable_points_downloads_at_a_mirror(cli, server, tmp_path, monkeypatch):
    server.files[H2Z] = horse2zebra_zip()
    monkeypatch.setenv("I2I_DOWNLOAD_URL", server.url + "/")
    monkeypatch.setenv("I2I_CACHE", str(tmp_path / "cache"))
    result = cli("download", "dataset", "horse2zebra")
    assert result.code == 0, result.err
    assert (tmp_path / "cache" / "datasets" / "cyclegan" / "horse2zebra" / "trainB").is_dir()
    assert server.served.requests == [(H2Z, "")]


def test_a_model_arrives_converted_and_translates(cli, server, tmp_path):
    net = reference_generator(channels=4, blocks=2)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    server.files[MODEL] = buffer.getvalue()
    result = cli("download", "model", "cyclegan/horse2zebra", "--root", tmp_path / "models", "--url", server.url)
    assert result.code == 0, result.err
    model = tmp_path / "models" / "cyclegan" / "horse2zebra.safetensors"
    assert model.is_file() and files_under(tmp_path / "models") == ["cyclegan/horse2zebra.safetensors"]
    assert "generator resnet (" in result.out and "blocks=2" in result.out
    assert f"translate with: i2i translate {model} IMAGES... --out DIR" in result.out

    draw_synthetic(1, "test", "A", 0, 40).save(tmp_path / "horse.png")
    translated = cli("translate", model, tmp_path / "horse.png", "--out", tmp_path / "out", "--device", "cpu")
    assert translated.code == 0, translated.err
    out = Image.open(tmp_path / "out" / "horse.png")
    assert out.size == (40, 40)
    with torch.no_grad():  # the converted generator computes what the original network computes
        x = torch.from_numpy(np.asarray(Image.open(tmp_path / "horse.png").convert("RGB"), np.float32) / 127.5 - 1)
        expected = ((net(x.permute(2, 0, 1)[None])[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(out, np.float32) - expected).max() <= 1.0


def test_a_model_that_is_not_a_plain_state_dict_is_refused_and_deleted(cli, server, tmp_path):
    server.files["/pix2pix/models-pytorch/edges2shoes.pth"] = b"not a torch file at all"
    line = error_line(cli("download", "model", "edges2shoes", "--root", tmp_path, "--url", server.url))
    assert "pix2pix/edges2shoes arrived but cannot convert" in line and "(the download was deleted)" in line
    assert files_under(tmp_path) == []


def test_inception_weights_arrive_where_evaluate_looks_and_the_published_prefix_is_checked(cli, server, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setenv("I2I_CACHE", str(tmp_path / "cache"))
    weights = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(1008, 4)}, weights)
    server.files[FID] = weights.getvalue()
    # the catalogue knows the file's sha256 prefix (6726825d): fabricated bytes cannot pass it
    line = error_line(cli("download", "inception", "--url", server.url))
    assert "does not match the expected sha256 prefix 6726825d" in line and "it was deleted" in line
    assert files_under(tmp_path) == []

    digest = hashlib.sha256(server.files[FID]).hexdigest()
    result = cli("download", "inception", "--kind", "fid", "--url", server.url, "--sha256", digest)
    assert result.code == 0, result.err
    assert inception_path("standard").read_bytes() == server.files[FID]
    assert "evaluate with: i2i evaluate RUN" in result.out and f"verified: sha256 {digest} matches" in result.out
    assert files_under(tmp_path / "cache") == [f"inception/{INCEPTION_FILES['standard']}"]


def test_the_catalogue_names_the_files_evaluate_looks_for():
    assert {e.protocol: e.file_name for e in entries("inception")} == INCEPTION_FILES
    assert len(entries("model")) == 23 and lookup("model", "pix2pix/day2night").url.endswith(
        "/pix2pix/models-pytorch/day2night.pth")
    assert {e.family for e in entries("dataset") if e.name in ("maps", "facades")} == {"cyclegan", "pix2pix"}


def test_a_cut_transfer_is_resumed_not_restarted(cli, server, tmp_path):
    archive = horse2zebra_zip(noise=40)
    server.files[H2Z], server.cut[H2Z] = archive, len(archive) // 2
    first = cli("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
    line = error_line(first)
    part = tmp_path / ".downloads" / "cyclegan-horse2zebra.zip.part"
    assert "was cut at" in line and line.endswith(f"are kept in {part}: run the same command again to resume from"
                                                  " there")  # the server said it takes ranges: no doubt expressed
    assert not (tmp_path / "cyclegan").exists()
    assert part.stat().st_size == len(archive) // 2

    second = cli("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
    assert second.code == 0, second.err
    assert "resumed at" in second.out
    assert server.served.requests == [(H2Z, ""), (H2Z, f"bytes={len(archive) // 2}-")]
    assert server.sent(H2Z) == len(archive)  # every byte sent once: the second request asked only for the rest
    assert len(list((tmp_path / "cyclegan" / "horse2zebra" / "trainA").glob("*.png"))) == 43


def test_a_server_without_range_support_is_named_and_the_rerun_replaces_the_partial_file(cli, tmp_path):
    archive = horse2zebra_zip(noise=40)
    half = len(archive) // 2
    part = tmp_path / ".downloads" / "cyclegan-horse2zebra.zip.part"
    with FileServer(ranges=False) as server:
        server.files[H2Z], server.cut[H2Z] = archive, half
        # pinned: a .part appended to instead of replaced would fail the digest
        args = ("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url, "--sha256",
                hashlib.sha256(archive).hexdigest())
        line = error_line(cli(*args))
        # the server said nothing about ranges: the part is kept, and the line does not promise that a rerun resumes
        assert line.endswith(f"the {human_size(half)} fetched are kept in {part}: run the same command again to resume"
                             " from there if the server allows it (it did not say; if not, it starts again)")
        assert part.stat().st_size == half

        again = cli(*args)
        assert again.code == 0, again.err
        assert (f"warning: the server does not support resuming: downloading {server.url}{H2Z} again from the start"
                f" (the {human_size(half)} fetched before are replaced)") in again.err.splitlines()
        assert "resumed" not in again.out and "verified: sha256 " in again.out
        assert server.served.requests == [(H2Z, ""), (H2Z, f"bytes={half}-")]  # one request: the 200 is the file
    assert files_under(tmp_path / ".downloads") == []
    assert len(list((tmp_path / "cyclegan" / "horse2zebra" / "trainA").glob("*.png"))) == 43


def test_a_cut_from_a_server_known_not_to_resume_deletes_the_partial_file(cli, tmp_path):
    archive = horse2zebra_zip(noise=40)
    with FileServer(ranges=False) as server:
        server.files[H2Z], server.cut[H2Z] = archive, len(archive) // 2
        args = ("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
        error_line(cli(*args))
        server.cut[H2Z] = len(archive) // 4  # the rerun learns the server ignores ranges, and is cut again
        cut = cli(*args)
        assert "warning: the server does not support resuming" in cut.err
        assert error_line(cut).endswith("the server does not support resuming, so the partial file was deleted: run"
                                        " the same command again to download it from the start")
        assert files_under(tmp_path) == []
        assert cli(*args).code == 0
        assert server.served.requests[-1] == (H2Z, "")


def test_ctrl_c_during_a_transfer_says_the_rerun_resumes_and_it_does(cli, server, tmp_path):
    archive = horse2zebra_zip(noise=40)
    half = len(archive) // 2
    server.files[H2Z], server.hold[H2Z] = archive, half  # half of it, then nothing until released: a slow server
    part = tmp_path / ".downloads" / "cyclegan-horse2zebra.zip.part"
    args = ["download", "dataset", "horse2zebra", "--root", str(tmp_path), "--url", server.url]
    # SIGINT restored in the child: a shell that starts the tests in the background leaves it ignored, and Python
    # then installs no KeyboardInterrupt handler (a terminal's Ctrl-C is never ignored)
    proc = subprocess.Popen([sys.executable, "-m", "i2i", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.stat().st_size == half):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first half never arrived"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        server.release.set()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == (f"interrupted: the download of {server.url}{H2Z} was stopped at {human_size(half)}"
                                    f" of {human_size(len(archive))}; the {human_size(half)} fetched are kept in"
                                    f" {part}: run the same command again to resume from there")
    assert part.stat().st_size == half

    again = cli(*args)
    assert again.code == 0, again.err
    assert f"resumed at {human_size(half)}" in again.out
    assert server.served.requests[-1] == (H2Z, f"bytes={half}-")
    assert len(list((tmp_path / "cyclegan" / "horse2zebra" / "trainA").glob("*.png"))) == 43


def test_an_archive_left_by_a_stopped_unpack_is_checked_and_unpacked_without_fetching_it(cli, server, tmp_path):
    archive = horse2zebra_zip()
    # what Ctrl-C while unpacking leaves (products.download_dataset): the whole, verified archive in .downloads
    left = tmp_path / ".downloads" / "cyclegan-horse2zebra.zip"
    left.parent.mkdir()
    left.write_bytes(archive)
    args = ("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
    line = error_line(cli(*args, "--sha256", "0" * 64))  # checked again as a fresh download is
    assert "does not match the expected sha256" in line and "run the same command again to download it whole" in line
    assert files_under(tmp_path) == []
    left.write_bytes(archive)
    result = cli(*args, "--sha256", hashlib.sha256(archive).hexdigest())
    assert result.code == 0, result.err
    assert "fetched whole by an earlier call" in result.out and "verified: sha256 " in result.out
    assert server.served.requests == []
    assert files_under(tmp_path / ".downloads") == []


def test_a_whole_part_is_checked_not_fetched_again_and_a_longer_one_is_replaced(cli, server, tmp_path):
    archive = horse2zebra_zip()
    server.files[H2Z] = archive
    part = tmp_path / ".downloads" / "cyclegan-horse2zebra.zip.part"
    part.parent.mkdir()
    part.write_bytes(archive)  # what Ctrl-C while the digest was being computed leaves
    args = ("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
    result = cli(*args)
    assert result.code == 0, result.err
    assert "fetched whole by an earlier call" in result.out
    assert server.served.requests == [(H2Z, f"bytes={len(archive)}-")] and server.sent(H2Z) == 0

    root = tmp_path / "other"
    part = root / ".downloads" / "cyclegan-horse2zebra.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive + b"not of this file")
    result = cli("download", "dataset", "horse2zebra", "--root", root, "--url", server.url)
    assert result.code == 0, result.err
    assert (f"warning: {part} ({human_size(len(archive) + 16)}) is not the start of the file on the server of"
            f" {human_size(len(archive))}: downloading {server.url}{H2Z} again from the start") in result.err
    assert "resumed" not in result.out and (root / "cyclegan" / "horse2zebra" / "trainB").is_dir()


def test_download_list_keeps_every_url_whole_in_a_narrow_log(tmp_path):
    listing = run_module("download", "list", env={"COLUMNS": "60"})  # stdout is a pipe: not a terminal
    assert listing.code == 0, listing.err
    lines = listing.out.splitlines()
    assert lines[0].split() == ["kind", "name", "layout", "url"]
    everything = [entry for kind in KINDS for entry in entries(kind)]
    assert len(lines) == 1 + len(everything)
    for line, entry in zip(lines[1:], everything):
        assert line.split()[1] == entry.qualified and line.endswith(f"  {entry.url}")
    assert max(len(line) for line in lines) > 60  # the URLs are longer than the width: not folded to fit it


def test_a_wrong_hash_ends_in_one_line_and_nothing_is_kept(cli, server, tmp_path):
    server.files[H2Z] = horse2zebra_zip()
    line = error_line(cli("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url,
                          "--sha256", "0" * 64))
    assert f"{server.url}{H2Z}: its sha256 {hashlib.sha256(server.files[H2Z]).hexdigest()} does not match" in line
    # fetched whole, as the server said: a rerun would fetch the same bytes, so the line points elsewhere
    assert line.endswith("it was deleted: the source serves this file, so running the same command again would fetch it"
                         f" again: check the --sha256 given, if any, or check the mirror given with --url {server.url}"
                         " (it must serve upstream's paths), or fetch from upstream without it")
    assert files_under(tmp_path) == []


def test_a_broken_archive_is_deleted_with_what_to_do_and_a_rerun_fetches_it_anew(cli, server, tmp_path):
    whole = horse2zebra_zip(noise=4)
    args = ("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url)
    server.files[H2Z] = whole[: len(whole) // 2]  # served complete (its Content-Length says so): the source is broken
    line = error_line(cli(*args))
    assert "horse2zebra.zip is " in line and ("damaged or truncated" in line or "neither a zip nor a tar" in line)
    assert line.endswith("it was deleted: the source serves it so, and running the same command again would fetch it"
                         f" again: check the mirror given with --url {server.url} (it must serve upstream's paths), or"
                         " fetch from upstream without it")
    assert files_under(tmp_path) == [] and not (tmp_path / "cyclegan").exists()

    server.unsized.add(H2Z)  # no Content-Length: a transfer cut on the way looks the same, so a rerun may help
    line = error_line(cli(*args))
    assert line.endswith("it was deleted: the transfer may be at fault (the server did not say its size): run the same"
                         " command again to download it afresh")
    assert files_under(tmp_path) == []

    server.files[H2Z] = whole  # the mirror is mended: the rerun fetches the file anew, nothing of the broken one
    again = cli(*args)
    assert again.code == 0, again.err
    assert server.served.requests == [(H2Z, "")] * 3 and "resumed" not in again.out
    assert len(list((tmp_path / "cyclegan" / "horse2zebra" / "trainA").glob("*.png"))) == 7


def test_a_missing_file_and_a_refused_connection_end_in_one_line(cli, server, tmp_path, monkeypatch):
    line = error_line(cli("download", "dataset", "apple2orange", "--root", tmp_path, "--url", server.url))
    # the user gave the mirror: the line says to check it, and suggests no --url
    assert line == (f"error: {server.url}/cyclegan/datasets/apple2orange.zip was not found (HTTP 404): check the"
                    f" mirror given with --url {server.url}: it must serve upstream's paths, here"
                    " /cyclegan/datasets/apple2orange.zip")
    monkeypatch.setenv("I2I_DOWNLOAD_URL", server.url)
    line = error_line(cli("download", "dataset", "apple2orange", "--root", tmp_path))
    assert f"was not found (HTTP 404): check the mirror given with $I2I_DOWNLOAD_URL={server.url}: it must" in line
    refused = refused_url()
    line = error_line(cli("download", "model", "style_monet", "--root", tmp_path, "--url", refused))
    assert line.endswith(f"cannot reach {refused.removeprefix('http://')} (connection refused) for {refused}"
                         f"/cyclegan/pretrained_models/style_monet.pth: check the network and the mirror given with"
                         f" --url {refused}")
    assert list(tmp_path.iterdir()) == []


def test_a_download_larger_than_the_free_disk_space_is_refused_before_writing(cli, server, tmp_path):
    server.files[H2Z], server.announce[H2Z] = horse2zebra_zip(), 10**16  # 10 PB: more than any test disk has
    line = error_line(cli("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url))
    assert f"not enough disk space in {tmp_path / '.downloads'}: the download needs 10000.0 TB more" in line
    assert files_under(tmp_path) == []


def test_an_archive_reaching_outside_its_folder_is_refused(cli, server, tmp_path):
    root = tmp_path / "root"
    server.files[H2Z] = zip_bytes({"horse2zebra/trainA/0.png": noise_png(0), "../../evil.txt": b"owned"})
    line = error_line(cli("download", "dataset", "horse2zebra", "--root", root, "--url", server.url))
    assert "horse2zebra.zip has an entry outside the target folder (../../evil.txt); refusing to unpack it" in line
    server.files[FACADES] = tar_bytes({"facades/train/0.png": noise_png(0)},
                                      links={"facades/train/passwd": "../../../../../etc/passwd"})
    line = error_line(cli("download", "dataset", "pix2pix/facades", "--root", root, "--url", server.url))
    assert "a link pointing outside the target folder (facades/train/passwd -> ../../../../../etc/passwd)" in line
    server.files[FACADES] = tar_bytes({"/tmp/facades/train/0.png": noise_png(0)})
    assert "an entry with an absolute path" in error_line(
        cli("download", "dataset", "pix2pix/facades", "--root", root, "--url", server.url))
    assert files_under(tmp_path) == []


def test_an_archive_of_the_wrong_layout_is_refused(cli, server, tmp_path):
    server.files[H2Z] = zip_bytes({"horse2zebra/train/0.png": noise_png(0)})
    line = error_line(cli("download", "dataset", "horse2zebra", "--root", tmp_path, "--url", server.url))
    assert "holds train/ but not trainA/ and trainB/ (the unpaired layout recipes/cyclegan.toml trains on)" in line
    assert files_under(tmp_path) == []


def test_unpacking_is_bounded_and_links_inside_stay(tmp_path):
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zip_bytes({"big.bin": bytes(2_000_000)}))
    with pytest.raises(BadArchive, match="would unpack to 2.0 MB, more than the bound of 1.0 MB"):
        extract(bomb, tmp_path / "out", bound=1_000_000)
    assert not (tmp_path / "out").exists()
    inside = tmp_path / "inside.tar.gz"
    inside.write_bytes(tar_bytes({"d/a.txt": b"a"}, links={"d/b.txt": "a.txt"}))
    out = extract(inside, tmp_path / "ok")
    assert (out / "d" / "b.txt").read_bytes() == b"a"


def test_bad_names_and_options_are_one_line(cli, tmp_path):
    assert "did you mean 'horse2zebra'?" in error_line(cli("download", "dataset", "hors2zebra"))
    assert "pass cyclegan/maps (unpaired) or pix2pix/maps (aligned)" in error_line(cli("download", "dataset", "maps"))
    assert "cityscapes-dataset.com" in error_line(cli("download", "dataset", "cityscapes"))
    assert "is not a sha256 digest" in error_line(cli("download", "model", "horse2zebra", "--sha256", "xyz"))
    assert "is not an http(s) URL" in error_line(cli("download", "model", "horse2zebra", "--url", "ftp://x"))
    (tmp_path / "cyclegan" / "horse2zebra").mkdir(parents=True)
    assert "exists but is not a finished `i2i download`" in error_line(
        cli("download", "dataset", "horse2zebra", "--root", tmp_path))
