"""The training loop's pieces: LR schedule, image pool, batched calls, checkpoints and their policy keys,
the process group's owner."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import RECIPES, TINY, error_line
from i2i.storage.checkpoint import list_checkpoints, load_network, save_checkpoint
from i2i.errors import I2IError
from i2i.contract.registry import create
from i2i.contract.parts import ScheduleClock

QUICK = RECIPES / "quickstart.toml"


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """The stock linear schedule's factor in `epoch`."""
    clock = ScheduleClock(step=epoch, epoch=epoch, steps_per_epoch=1, total_steps=epochs + decay_epochs,
                          epochs=epochs, decay_epochs=decay_epochs)
    return create("schedule", "linear").factor(clock)


def test_lr_factor_is_the_reference_linear_policy():
    # reference: 1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1), epoch_count = 1
    assert [lr_factor(e, 3, 2) for e in range(5)] == [1, 1, 1, pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert [lr_factor(e, 0, 3) for e in range(3)] == [0.75, 0.5, 0.25]


def test_lr_is_constant_then_decays_per_epoch(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *TINY, "--set", "data.count=2", "--set", "train.epochs=1",
                 "--set", "train.decay_epochs=2", "--set", "train.max_steps=0", "--set", "train.log_every=1",
                 "--out", run)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records] == [0, 0, 1, 1, 2, 2]
    expected = [2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 * 2 / 3, 2e-4 / 3, 2e-4 / 3]
    assert [r["lr"]["G"] for r in records] == pytest.approx(expected)
    assert [r["lr"]["D"] for r in records] == pytest.approx(expected)


def test_image_pool_stores_until_full_then_swaps_half():
    pool = create("buffer", "image_pool", size=4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the new fakes come back
    torch.manual_seed(0)
    stored = 0
    for i in range(200):
        new = torch.full((1, 1, 1, 1), 100.0 + i)
        out = pool.query(new)
        stored += int(out.item() != new.item())
    assert 70 < stored < 130  # p = 0.5 of getting an older image back
    state = pool.state_dict()["images"]
    assert state.shape == (4, 1, 1, 1)
    clone = create("buffer", "image_pool", size=4)
    clone.load_state_dict({"images": state})
    assert torch.equal(clone.state_dict()["images"], state)
    assert torch.equal(create("buffer", "image_pool", size=0).query(first), first)


def test_batched_calls_compute_the_same_step(cli, tmp_path):
    runs = {}
    for flag in ("true", "false"):
        run = tmp_path / flag
        assert cli("run", QUICK, *TINY, "--set", f"method.batch_calls={flag}", "--out", run).code == 0
        runs[flag] = {}
        for file in (run / "checkpoints" / "step-00000004").glob("*_*.safetensors"):
            with safe_open(file, "pt") as f:
                runs[flag].update({f"{file.stem}.{k}": f.get_tensor(k) for k in f.keys()})
    assert runs["true"].keys() == runs["false"].keys()
    # Same math; only float summation order differs. Conv biases just before an instance norm have a zero
    # gradient up to rounding, which Adam scales to +-lr steps in either run; they cannot change any output,
    # so the weights and the networks' outputs are compared instead of those biases.
    worst = max((runs["true"][k] - runs["false"][k]).abs().max().item() for k in runs["true"] if "weight" in k)
    assert worst < 1e-6
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    outputs = []
    for flag in ("true", "false"):
        net = create("generator", "resnet", blocks=1, channels=4).eval()
        net.load_state_dict({k[4:]: v for k, v in runs[flag].items() if k.startswith("G_A.")})
        outputs.append(net(x))
    assert (outputs[0] - outputs[1]).abs().max().item() < 1e-5


def test_checkpoint_is_atomic_and_self_describing(tmp_path):
    net = create("generator", "resnet", blocks=1, channels=4)
    meta = {"G": {"i2i.kind": "generator", "i2i.name": "resnet", "i2i.options": "{}"}}
    (tmp_path / "ck" / ".step-00000009.tmp-1").mkdir(parents=True)  # what a crash mid-write leaves
    path = save_checkpoint(tmp_path / "ck", 10, {"G": net}, meta, {"x": torch.ones(2)}, {"step": 10})
    assert path.name == "step-00000010"
    assert list_checkpoints(tmp_path / "ck") == [path]
    with safe_open(path / "G.safetensors", "pt") as f:
        assert f.metadata()["i2i.name"] == "resnet"
    other = create("generator", "resnet", blocks=1, channels=4)
    load_network(path / "G.safetensors", other)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    with pytest.raises(I2IError, match="G.safetensors does not fit the network: key .model.11.bias."):
        load_network(path / "G.safetensors", create("generator", "resnet", blocks=2, channels=4))
    (path / "G.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(I2IError, match="cannot read checkpoint file .*G.safetensors"):
        load_network(path / "G.safetensors", other)


def test_data_order_and_augmentation_do_not_depend_on_the_worker_count(cli, tmp_path):
    for workers in (0, 2):
        args = [*TINY, "--set", f"data.workers={workers}", "--set", "data.count=6", "--set", "data.batch_size=2"]
        assert cli("run", QUICK, *args, "--out", tmp_path / str(workers)).code == 0
    a, b = ({f"{f.stem}.{k}": v for f in (tmp_path / n / "checkpoints" / "step-00000004").glob("[GD]_*")
             for k, v in load_file(f).items()} for n in ("0", "2"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# -- checkpoint and sample policy: the callbacks' own keys, the deprecated [train] ones -------------------------

#: TINY without its checkpoint and sample keys, for the runs that set them themselves
BARE = [x for i in range(0, len(TINY), 2) for x in TINY[i:i + 2]
        if not TINY[i + 1].startswith(("callback.checkpoints.", "callback.samples."))]
OLD_KEYS = {"checkpoint_every": ("checkpoints", "every"), "keep_checkpoints": ("checkpoints", "keep"),
            "samples": ("samples", "images")}


def checkpoint_names(run) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def old_style(tables: dict, values: dict) -> dict:
    """`tables` with the policy keys where recipes before [callback.checkpoints] options held them: in [train]."""
    tables = json.loads(json.dumps(tables))
    for old, (callback, key) in OLD_KEYS.items():
        tables.get("callback", {}).get(callback, {}).pop(key, None)
        tables["train"][old] = values[old]
    tables["callback"] = {name: table for name, table in tables.get("callback", {}).items() if table}
    return tables


def test_the_callbacks_own_keys_set_how_often_and_how_many_checkpoints_and_samples(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("run", QUICK, *BARE, "--set", "train.max_steps=6", "--set", "callback.checkpoints.every=2",
                 "--set", "callback.checkpoints.keep=1", "--set", "callback.samples.images=0", "--out", run)
    assert result.code == 0, result.err
    assert "is deprecated" not in result.err
    # every 2 steps, the newest periodic one kept, the final one always
    assert checkpoint_names(run) == ["step-00000004", "step-00000006"]
    assert not (run / "samples").exists() or not any((run / "samples").iterdir())
    saved = tomllib.loads((run / "recipe.toml").read_text())
    assert saved["callback"]["checkpoints"] == {"enabled": True, "every": 2, "keep": 1}
    assert saved["callback"]["samples"] == {"enabled": True, "images": 0}
    assert not {"checkpoint_every", "keep_checkpoints", "samples"} & set(saved["train"])


def test_with_the_checkpoints_callback_off_only_the_final_checkpoint_is_written_and_resumes(cli, tmp_path):
    run = tmp_path / "run"
    off = [*TINY, "--set", "callback.checkpoints.enabled=false", "--set", "callback.checkpoints.every=1"]
    result = cli("run", QUICK, *off, "--out", run)
    assert result.code == 0, result.err
    assert checkpoint_names(run) == ["step-00000004"]
    resumed = cli("run", QUICK, *off, "--set", "train.max_steps=6", "--out", run, "--resume")
    assert resumed.code == 0, resumed.err
    assert checkpoint_names(run) == ["step-00000004", "step-00000006"]


def test_the_deprecated_train_keys_work_with_one_warning_each_naming_the_new_key(cli, tmp_path):
    values = {"checkpoint_every": 1, "keep_checkpoints": 2, "samples": 1}
    recipe = tmp_path / "old.toml"
    recipe.write_text(tomli_w.dumps(old_style(tomllib.loads(QUICK.read_text()), values)))
    by_file, by_set = tmp_path / "file", tmp_path / "set"
    from_file = cli("run", recipe, *BARE, "--set", "train.max_steps=5", "--out", by_file)
    from_set = cli("run", QUICK, *BARE, "--set", "train.max_steps=5", "--set", "train.checkpoint_every=1",
                   "--set", "train.keep_checkpoints=2", "--set", "train.samples=1", "--out", by_set)
    for result in (from_file, from_set):
        assert result.code == 0, result.err
    for old, (callback, key) in OLD_KEYS.items():
        line = f"warning: {recipe}: train.{old} is deprecated: use callback.{callback}.{key}"
        assert from_file.err.count(line) == 1, from_file.err
        line = (f"warning: --set train.{old}={values[old]} is deprecated: use --set"
                f" callback.{callback}.{key}={values[old]}")
        assert from_set.err.count(line) == 1, from_set.err
    assert sum("is deprecated" in line for line in from_file.err.splitlines()) == 3
    for run in (by_file, by_set):
        assert checkpoint_names(run) == ["step-00000003", "step-00000004", "step-00000005"]
        assert sorted(p.name for p in (run / "samples").glob("*.png")) == [f"step-0000000{s}.png" for s in (2, 4, 5)]
        saved = tomllib.loads((run / "recipe.toml").read_text())
        assert saved["callback"]["checkpoints"] == {"enabled": True, "every": 1, "keep": 2}
        assert saved["callback"]["samples"] == {"enabled": True, "images": 1}


def test_a_run_folder_whose_recipe_has_the_old_keys_still_resumes(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("run", QUICK, *TINY, "--out", run).code == 0
    # as a run folder written before the keys moved: its recipe.toml holds them in [train]
    saved = tomllib.loads((run / "recipe.toml").read_text())
    (run / "recipe.toml").write_text(tomli_w.dumps(old_style(saved, {"checkpoint_every": 2, "keep_checkpoints": 3,
                                                                     "samples": 2})))
    resumed = cli("run", run / "recipe.toml", "--set", "train.max_steps=6", "--out", run, "--resume")
    assert resumed.code == 0, resumed.err
    assert "train.checkpoint_every is deprecated: use callback.checkpoints.every" in resumed.err
    assert checkpoint_names(run) == ["step-00000002", "step-00000004", "step-00000006"]
    rewritten = tomllib.loads((run / "recipe.toml").read_text())
    assert rewritten["callback"]["checkpoints"]["every"] == 2 and "checkpoint_every" not in rewritten["train"]


def test_an_old_key_and_its_new_key_set_differently_is_one_error(cli, tmp_path):
    tables = tomllib.loads(QUICK.read_text())
    tables["train"]["checkpoint_every"] = 1
    tables["callback"]["checkpoints"]["every"] = 3
    recipe = tmp_path / "both.toml"
    recipe.write_text(tomli_w.dumps(tables))
    line = error_line(cli("run", recipe, *BARE, "--out", tmp_path / "run"))
    assert "train.checkpoint_every = 1 and callback.checkpoints.every = 3 are the same setting" in line, line
    assert "keep callback.checkpoints.every and remove train.checkpoint_every" in line
    assert not (tmp_path / "run").exists()


# -- the process group: joined and left by the trainer ---------------------------------------------------------

@pytest.mark.parametrize("case", ["finishes", "fails while building", "fails while training"])
def test_the_trainer_leaves_the_process_group_it_joined_however_it_ends(tmp_path, monkeypatch, case):
    from i2i.engine import Trainer
    from i2i.engine.distributed import Distributed
    from i2i.recipe import load_recipe

    calls = []
    start, stop = Distributed.start, Distributed.stop
    monkeypatch.setattr(Distributed, "start", lambda self, *args: (calls.append("start"), start(self, *args))[1])
    monkeypatch.setattr(Distributed, "stop", lambda self: (calls.append("stop"), stop(self))[1])
    overrides = {"finishes": [],
                 # a callback refuses the built run after the group was joined (its on_setup)
                 "fails while building": ["callback.validation.split=nope"],
                 "fails while training": ["optim.lr=1e30"]}[case]
    recipe = load_recipe(QUICK, [*TINY[1::2], *overrides])
    if case == "finishes":
        Trainer(recipe, tmp_path / "run").run()
    else:
        with pytest.raises(I2IError, match="split = 'nope'|became"):
            Trainer(recipe, tmp_path / "run").run()
    assert calls == ["start", "stop"]


def test_which_train_keys_moved_is_what_callbacks_declare(recwarn):
    """The core knows no callback's name: a callback option that `replaces` an old [train] key takes it over, a
    third party's as the stock checkpoints callback's `every` does."""
    import i2i
    from i2i.api import Callback, Option
    from i2i.contract.registry import default_registry
    from i2i.recipe import load_recipe, moved_train_keys

    class Pacer(Callback):
        """A callback whose `every` was once the (made-up) [train] key pace_every."""

        name = "test_pacer"
        options = (Option("every", int, 5, "steps between paces", min=1, replaces="train.pace_every"),)

        def __init__(self, *, every: int = 5) -> None:
            self.every = every

    class Plugin:
        @i2i.hookimpl
        def i2i_callbacks(self):
            return [Pacer]

    registry = default_registry()
    registry.register(Plugin(), name="test-pacer")
    try:
        assert moved_train_keys(registry) == {"checkpoint_every": ("checkpoints", "every"),
                                              "keep_checkpoints": ("checkpoints", "keep"),
                                              "samples": ("samples", "images"),
                                              "pace_every": ("test_pacer", "every")}
        recipe = load_recipe(RECIPES / "quickstart.toml", ["train.pace_every=3"], registry=registry)
        assert recipe["callback"]["test_pacer"] == {"enabled": True, "every": 3}
        assert "pace_every" not in recipe["train"]
        assert [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)] == [
            "--set train.pace_every=3 is deprecated: use --set callback.test_pacer.every=3"]
    finally:
        registry.manager.unregister(name="test-pacer")
        registry._parts = None


def test_info_says_which_old_key_an_option_replaced(cli):
    result = cli("info", "callback", "checkpoints")
    assert result.code == 0 and "train.checkpoint_every" in result.out and "train.keep_checkpoints" in result.out
