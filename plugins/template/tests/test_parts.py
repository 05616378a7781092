"""My parts as users get them: installed, found through the entry point, checked, and trained briefly."""

from pathlib import Path

from i2i.testing import SMOKE_RECIPE, check_part, run_recipe


def test_mygen_keeps_the_part_contract() -> None:
    check_part("generator", "mygen", layers=2, channels=4)


def test_mygen_trains_in_a_cyclegan(tmp_path: Path) -> None:
    run = run_recipe(SMOKE_RECIPE, "generator.name=mygen", "generator.layers=2", out=tmp_path / "run")
    assert 'name = "mygen"' in (run / "recipe.toml").read_text()
