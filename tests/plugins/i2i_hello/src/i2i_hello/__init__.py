"""Commands a plugin adds to `i2i`: `i2i hello`, and a `list` that the core's own `i2i list` keeps out."""

import click

import i2i


@click.command()
@click.option("--name", default="world", show_default=True, help="Whom to greet.")
def hello(name: str) -> None:
    """Greet NAME from this plugin package."""
    click.echo(f"hello from i2i-hello, {name}")


@click.command(name="list")
def list_() -> None:
    """Named like a core command, so it is not added."""
    click.echo("the plugin's list")


@i2i.hookimpl
def i2i_commands():
    return [hello, list_]
