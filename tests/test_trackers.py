"""The experiment trackers (stock callbacks tensorboard, mlflow, wandb): driven through the CLI, read back with each
library's own reader, continued by --resume, and never the reason a run fails."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RECIPES, TINY, Result, error_line

QUICK = RECIPES / "quickstart.toml"
ALL_THREE = ["--set", "callback.tensorboard.images=true", "--set", "callback.mlflow.experiment=i2i-test",
             "--set", "callback.wandb.mode=offline", "--set", "callback.progress.enabled=false"]
LOSSES = ["G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"]


@pytest.fixture(autouse=True)
def quiet_trackers(monkeypatch):
    """No tracker reaches the network: W&B offline, MLflow gives up on a dead server at once."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def wandb_records(path: Path) -> list:
    """The records of a W&B run log (.wandb): wandb's LevelDB-style framing (a 7-byte file header, then 32 KiB
    blocks of chunks, each with a 7-byte header: crc32c, length, type full/first/middle/last), each record a
    `wandb_internal_pb2.Record` read with wandb's own protobuf schema. wandb 0.31 ships no Python reader of
    offline runs (its datastore module is gone and `wandb.Api` needs a server), so the framing is read here."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    out, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def wandb_history(run_dir: Path) -> tuple[str, list[dict], list[int]]:
    """(run id, history rows with values decoded, exit codes) of one offline W&B run folder."""
    rows, exits, run_id = [], [], None
    for record in wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
        elif kind == "exit":
            exits.append(record.exit.exit_code)
    return run_id, rows, exits


def test_three_trackers_at_once_then_resume(cli, tmp_path, one_thread):
    """TensorBoard, MLflow and W&B in one run of 2 steps, then --resume to 4: each holds every loss and learning
    rate at its step, the images and the recipe; MLflow and W&B continue the same run."""
    run = tmp_path / "run"
    common = [*TINY, *ALL_THREE, "--set", "train.log_every=1", "--out", run]
    first = cli("run", QUICK, *common, "--set", "train.max_steps=2")
    assert first.code == 0, first.err
    second = cli("run", QUICK, *common, "--set", "train.max_steps=4", "--resume")
    assert second.code == 0, second.err
    assert "warning" not in first.err + second.err
    logged = records(run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]

    # TensorBoard, through its own event reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    for name in LOSSES:
        assert [(e.step, e.value) for e in events.Scalars(f"loss/{name}")] == [
            (r["step"], pytest.approx(r["losses"][name])) for r in logged]
    for group in ("G", "D"):
        assert [(e.step, e.value) for e in events.Scalars(f"lr/{group}")] == [
            (r["step"], pytest.approx(r["lr"][group])) for r in logged]
    assert [e.step for e in events.Images("samples")] == [1, 2, 3, 4]
    recipe_text = events.Tensors("recipe/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "[generator]" in recipe_text and "max_steps = 4" in recipe_text
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    # MLflow, through MlflowClient on the run folder's store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("i2i-test").experiment_id])
    run_id = found.info.run_id
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["generator.channels"] == "4" and found.data.params["train.max_steps"] == "2"
    for name in LOSSES:
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, f"loss/{name}")] == [
            (r["step"], pytest.approx(r["losses"][name])) for r in logged]
    assert [m.step for m in client.get_metric_history(run_id, "lr/G")] == [1, 2, 3, 4]
    assert {f.path for f in client.list_artifacts(run_id)} == {"generators", "recipe.toml", "report"}
    assert {f.path for f in client.list_artifacts(run_id, "generators")} == {"generators/G_A.safetensors",
                                                                            "generators/G_B.safetensors"}
    assert "report/report.html" in {f.path for f in client.list_artifacts(run_id, "report")}
    from i2i.storage.rundir import RunFolder

    state = RunFolder(run).read_state(RunFolder(run).newest_checkpoint())
    assert json.dumps(state).count(run_id) >= 1  # the checkpoint keeps the MLflow run's id for --resume

    # W&B: both sessions' offline run folders hold the same run id, and the steps continue
    sessions = sorted(p for p in (run / "wandb").glob("offline-run-*") if p.is_dir())
    assert len(sessions) == 2
    (id1, rows1, exits1), (id2, rows2, exits2) = map(wandb_history, sessions)
    assert id1 == id2 and exits1 == exits2 == [0]
    rows = rows1 + rows2
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert [row["loss/cycle_A"] for row in rows] == pytest.approx([r["losses"]["cycle_A"] for r in logged])
    assert all(row["samples/_type"] == "image-file" for row in rows)
    assert list((sessions[0] / "files" / "media" / "images").glob("samples_*.png"))


def test_a_failing_tracker_is_one_warning_and_training_goes_on(cli, tmp_path, one_thread):
    """An unwritable TensorBoard folder and an unreachable MLflow server: one warning line each, exit 0."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the event folder should be")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "callback.progress.enabled=false", "--out", run,
                 "--set", f"callback.tensorboard.log_dir={blocker / 'tb'}",
                 "--set", f"callback.mlflow.tracking_uri=http://127.0.0.1:{port}")
    assert result.code == 0, result.err
    warned = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 2, result.err
    assert sum("tracker 'tensorboard' stopped logging" in line for line in warned) == 1
    assert sum("tracker 'mlflow' stopped logging" in line for line in warned) == 1
    assert [r["step"] for r in records(run)] == [2, 4]


def test_a_missing_library_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys\n"
            "sys.modules['mlflow'] = None\n"  # as if mlflow were not installed
            "from i2i.cli import main\n"
            "main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(QUICK), *TINY, "--set",
                           "callback.mlflow.experiment=x", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    line = error_line(Result(proc.returncode, proc.stdout, proc.stderr))
    assert "callback 'mlflow' needs the mlflow package: pip install \"i2i-toolkit[mlflow]\"" in line
    assert not (tmp_path / "run").exists()
