"""`daycare config get|set`: read and change config.toml (comments survive `set`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import get_context
from daycare_cli.cli.params import group
from daycare_cli.core.errors import NotFoundError

MASK = "********"


def register(parent: typer.Typer) -> None:
    """Add the `config` group to the root app."""
    app = group("config", "Read and change config.toml.")
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
        str | None,
        typer.Argument(
            metavar="[KEY]", help="Dotted key, e.g. webhook.port (default: everything)."
        ),
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
    from daycare_cli.config import check_key

    check_key(key)
    value = config.get(key)
    if value is None:
        raise NotFoundError(
            f"config key {key!r} is not set and has no default",
            path=str(config.path),
            hint=f"set it with `daycare config set {key} VALUE`",
        )
    typer.echo(value_text(value))


def set_(
    ctx: typer.Context,
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY", help="Dotted key, e.g. timezone or webhook.port.", show_default=False
        ),
    ],
    value: Annotated[
        str,
        typer.Argument(
            metavar="VALUE",
            help='Value, read as TOML: 4, true, "text", bare word.',
            show_default=False,
        ),
    ],
) -> None:
    """Set a config value; the file's comments and layout are kept."""
    from daycare_cli.cli.edits import given_on_command_line
    from daycare_cli.config import ConfigError, check_key, parse_value, set_config_value
    from daycare_cli.core.errors import as_usage

    cli = get_context(ctx)
    check_key(key)
    parsed = parse_value(value)
    if key == "timezone" and isinstance(parsed, str):
        from daycare_cli.core.schedule import check_zone

        with given_on_command_line():
            check_zone(parsed)
    path = cli.config.path  # loading it checked the file as it is: an error now is the value's
    try:
        set_config_value(path, key, parsed)
    except ConfigError as err:
        raise as_usage(err) from None
    typer.echo(f"{key} = {value_text(parsed)} in {render.display_path(path)}")
