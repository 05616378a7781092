"""recipes/cyclegan_fast.toml, the recipe for better translations sooner: it trains, resumes bit for bit, exports.

Tiny widths and sizes on synthetic data: what is checked is that every part the recipe combines works together
through the CLI (its quality is measured by benchmarks/quality_maps.py, not here).
"""

from __future__ import annotations

import tomllib

from conftest import RECIPES, assert_same_final_state, kill_9_at, run_module

FAST = RECIPES / "cyclegan_fast.toml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_FAST = ["--set", "data.name=synthetic", "--set", "data.count=6", "--set", "data.load_size=36",
             "--set", "data.crop_size=32", "--set", "data.workers=0", "--set", "generator.channels=4",
             "--set", "generator.blocks=1", "--set", "discriminator.channels=4", "--set", "train.samples=1",
             "--set", "train.max_steps=10", "--set", "train.log_every=2", "--set", "train.checkpoint_every=2",
             "--set", "train.keep_checkpoints=0", "--set", "buffer.size=3", "--set", "run.device=cpu"]


def test_the_fast_recipe_trains_what_it_says(tmp_path):
    run = tmp_path / "fast"
    result = run_module("run", FAST, *TINY_FAST, "--out", run, env=ONE_THREAD)
    assert result.code == 0, result.err
    shipped = tomllib.loads(FAST.read_text())
    resolved = tomllib.loads((run / "recipe.toml").read_text())
    for table in ("generator", "discriminator", "augment", "schedule"):
        for key, value in shipped.get(table, {}).items():
            if key not in ("channels", "blocks"):  # made tiny above
                assert resolved[table][key] == value, f"{table}.{key}"
    final = run / "checkpoints" / "step-00000010"
    assert (final / "G_A.ema.safetensors").is_file(), "the recipe's EMA average is saved"
    records = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    assert len(records) == 5


def test_the_fast_recipe_resumes_bit_for_bit(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_module("run", FAST, *TINY_FAST, "--out", whole, env=ONE_THREAD).code == 0
    kill_9_at(killed, 4, 10, [FAST, *TINY_FAST], ONE_THREAD)
    result = run_module("run", FAST, *TINY_FAST, "--out", killed, "--resume", env=ONE_THREAD)
    assert result.code == 0, result.err
    assert_same_final_state(whole, killed, 10)


def test_the_fast_recipe_exports(tmp_path):
    run = tmp_path / "fast"
    assert run_module("run", FAST, *TINY_FAST, "--set", "train.max_steps=2", "--out", run, env=ONE_THREAD).code == 0
    out = tmp_path / "g.onnx"
    result = run_module("export", run, "--format", "onnx", "--out", out, "--size", "32", env=ONE_THREAD)
    assert result.code == 0, result.err
    assert out.is_file() and out.stat().st_size > 1000
    assert "EMA" in result.out + result.err, "the export says it used the EMA weights"
