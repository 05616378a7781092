"""My parts as users get them: installed, found through the entry point, checked, and trained briefly."""

import json
from pathlib import Path

from i2i.testing import SMOKE_RECIPE, check_part, run_recipe


def test_mygen_keeps_the_part_contract() -> None:
    check_part("generator", "mygen", layers=2, channels=4)


def test_mygen_trains_in_a_cyclegan(tmp_path: Path) -> None:
    run = run_recipe(SMOKE_RECIPE, "generator.name=mygen", "generator.layers=2", out=tmp_path / "run")
    assert 'name = "mygen"' in (run / "recipe.toml").read_text()


def test_mybest_adds_the_best_loss_to_the_metrics(tmp_path: Path) -> None:
    run = run_recipe(SMOKE_RECIPE, "callback.mybest.loss=G_A", "train.log_every=1", steps=3, out=tmp_path / "run")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(line["losses"]["G_A"] for line in lines)
    assert lines[-1]["mybest"]["best"] == best
