"""`daycare config get|set`: read and change config.toml (comments survive `set`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import get_context
from daycare_cli.core.errors import NotFoundError

MASK = "********"


def register(parent: typer.Typer) -> None:
    """Add the `config` group to the root app."""
    app = typer.Typer(name="config", help="Read and change config.toml.")
    app.command("get")(get)
    app.command("set")(set_)
    parent.add_typer(app)


def masked(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with the values of `[secrets]` hidden, for printing the whole file."""
    secrets = raw.get("secrets")
    if not isinstance(secrets, dict):
        return raw
    return {**raw, "secrets": {name: MASK for name in secrets}}


def value_text(value: Any) -> str:
    """A config value as TOML writes it; strings bare, tables as TOML."""
    import tomlkit

    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return tomlkit.dumps(value).rstrip("\n")
    return str(tomlkit.item(value).as_string())


def get(
    ctx: typer.Context,
    key: Annotated[
        str | None, typer.Argument(help="Dotted key, e.g. webhook.port (default: everything).")
    ] = None,
) -> None:
    """Print one config value, or the whole config as TOML (secrets masked)."""
    import tomlkit

    cli = get_context(ctx)
    config = cli.config
    if key is None:
        text = tomlkit.dumps(masked(config.raw))
        if not text.strip():
            text = f"# {render.display_path(config.path)} sets nothing; defaults apply\n"
        typer.echo(text, nl=False)
        return
    value = config.get(key)
    if value is None:
        raise NotFoundError(
            f"config key {key!r} is not set",
            path=str(config.path),
            hint=f"set it with `daycare config set {key} VALUE`",
        )
    typer.echo(value_text(value))


def set_(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. timezone or webhook.port.")],
    value: Annotated[str, typer.Argument(help='Value, read as TOML: 4, true, "text", bare word.')],
) -> None:
    """Set a config value; the file's comments and layout are kept."""
    from daycare_cli.config import parse_value, set_config_value

    cli = get_context(ctx)
    parsed = parse_value(value)
    if key == "timezone" and isinstance(parsed, str):
        from daycare_cli.core.schedule import check_zone

        check_zone(parsed)
    set_config_value(cli.config.path, key, parsed)
    typer.echo(f"{key} = {value_text(parsed)} in {render.display_path(cli.config.path)}")
