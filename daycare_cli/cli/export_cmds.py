"""`daycare export kubernetes|systemd` and `daycare import systemd|crontab`.

Thin: the translations are pure functions in core/ (`export_kubernetes`, `export_systemd`,
`import_systemd`, `crontab`); this module reads the files, writes the results and prints
what does not carry over. Exports write nothing when a task fails to parse, and nothing
under `--strict` when there is a warning; imports write nothing when a file fails.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import complete_task_id

if TYPE_CHECKING:
    from daycare_cli.core.export import TaskExport
    from daycare_cli.core.imported import ImportedTask
    from daycare_cli.store.tasks import TaskEntry

TasksArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[TASK]...", help="Task ids (default: every task).", autocompletion=complete_task_id
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "-o", "--output", metavar="DIR", help="Write the files into DIR (default: print them)."
    ),
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Fail, writing nothing, if anything does not carry over.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the task files instead of writing them.")
]


def register(parent: typer.Typer) -> None:
    """Add the `export` and `import` groups to the root app."""
    export_app = typer.Typer(
        name="export", help="Run tasks on Kubernetes or systemd instead of the daemon."
    )
    export_app.command("kubernetes")(export_kubernetes_cmd)
    export_app.command("systemd")(export_systemd_cmd)
    parent.add_typer(export_app)
    import_app = typer.Typer(name="import", help="Make task files from timers and crontabs.")
    import_app.command("systemd")(import_systemd_cmd)
    import_app.command("crontab")(import_crontab_cmd)
    parent.add_typer(import_app)


# --- export ------------------------------------------------------------------------------


def _entries(cli: CliContext, task_ids: list[str] | None) -> list[TaskEntry]:
    """The named tasks (or all), each parsed; the first invalid file is raised."""
    if task_ids:
        entries = [cli.store.load(task_id) for task_id in task_ids]
    else:
        entries = cli.store.list(cached=False)
    for entry in entries:
        entry.require()
    return entries


def _finish(exports: list[TaskExport], output: Path | None, strict: bool) -> None:
    """Print the warnings; then write the files to `output` (or stdout) unless strict fails."""
    from daycare_cli.core.errors import UserError

    count = 0
    for export in exports:
        for warning in export.warnings:
            render.warn(f"{export.task_id}: {warning}")
            count += 1
    if strict and count:
        raise UserError(
            f"{count} setting(s) do not carry over (see the warnings above); nothing written",
            hint="change the tasks, or export without --strict to accept the differences",
        )
    files = [(name, text) for export in exports for name, text in export.files.items()]
    if output is None:
        for name, text in files:
            if len(files) > 1:
                sys.stdout.write(f"# ==> {name} <==\n")
            sys.stdout.write(text)
        return
    from daycare_cli.store.paths import atomic_write

    output.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        atomic_write(output / name, text)
        typer.echo(f"wrote {render.display_path(output / name)}", err=True)


def export_kubernetes_cmd(
    ctx: typer.Context,
    task_ids: TasksArg = None,
    output: OutOption = None,
    strict: StrictOption = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image", metavar="IMAGE", help="Container image built from the Containerfile."
        ),
    ] = None,
    secret: Annotated[
        str, typer.Option("--secret", metavar="NAME", help="Secret holding the secrets tasks name.")
    ] = "daycare-secrets",
    artifacts_claim: Annotated[
        str | None,
        typer.Option(
            "--artifacts-claim", metavar="CLAIM", help="PersistentVolumeClaim for artifacts."
        ),
    ] = None,
) -> None:
    """Write a ConfigMap and CronJobs for each task with schedule triggers."""
    from daycare_cli import __version__
    from daycare_cli.core.export_kubernetes import export_kubernetes

    cli = get_context(ctx)
    exports = []
    for entry in _entries(cli, task_ids):
        task = entry.require()
        export, _objects = export_kubernetes(
            task,
            entry.path.read_text(encoding="utf-8"),
            source=render.display_path(entry.path),
            image=image or f"daycare:{__version__}",
            default_zone=cli.default_zone,
            now=cli.now,
            keep_runs=cli.config.keep_runs,
            default_model=cli.config.model,
            secret=secret,
            artifacts_claim=artifacts_claim,
        )
        exports.append(export)
    _finish(exports, output, strict)


def export_systemd_cmd(
    ctx: typer.Context,
    task_ids: TasksArg = None,
    output: OutOption = None,
    strict: StrictOption = False,
    artifacts: Annotated[
        str | None,
        typer.Option("--artifacts", metavar="DIR", help="Artifacts directory of the services."),
    ] = None,
) -> None:
    """Write a .timer and a .service for each task with schedule triggers."""
    import shutil

    from daycare_cli.core.export_systemd import ARTIFACTS, export_systemd

    cli = get_context(ctx)
    executable = shutil.which("daycare") or str(Path(sys.argv[0]).absolute())
    exports = []
    for entry in _entries(cli, task_ids):
        exports.append(
            export_systemd(
                entry.require(),
                source=render.display_path(entry.path),
                task_file=str(entry.path.absolute()),
                executable=str(Path(executable).absolute()),
                default_zone=cli.default_zone,
                now=cli.now,
                artifacts=artifacts or ARTIFACTS,
            )
        )
    _finish(exports, output, strict)


# --- import ------------------------------------------------------------------------------


def _write_imports(cli: CliContext, imported: list[ImportedTask], dry_run: bool) -> None:
    """Render every task first (any error stops before a file is written), then write."""
    from daycare_cli.core.taskedit import render_task
    from daycare_cli.core.taskfile import parse_task

    taken: list[str] = []
    planned: list[tuple[str, str, ImportedTask]] = []
    for item in imported:
        task_id = cli.store.new_id(item.task_id or item.name, taken)
        taken.append(task_id)
        text = item.text if item.text is not None else render_task(item.fields, item.body)
        parse_task(text, path=f"{item.origin} (imported as {task_id}.md)", task_id=task_id)
        planned.append((task_id, text, item))
    for task_id, text, item in planned:
        for warning in item.warnings:
            render.warn(f"{item.origin}: {task_id}: {warning}")
        if dry_run:
            sys.stdout.write(f"# ==> {task_id}.md <==\n{text}")
            continue
        path = cli.store.create(task_id, text)
        typer.echo(f"{item.origin}: wrote {render.display_path(path)}")


def _read(path: Path) -> str:
    from daycare_cli.core.errors import NotFoundError
    from daycare_cli.core.imported import ImportFileError

    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            "no such file", path=str(path), hint="give the path of a crontab or .timer file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ImportFileError(f"cannot read the file: {reason}", path=str(path)) from None


def import_crontab_cmd(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Crontabs (- for stdin).")],
    system: Annotated[
        bool | None,
        typer.Option(
            "--system/--user",
            help="Lines have a user field (default: for /etc/crontab and /etc/cron.d/*).",
        ),
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Make a task of each crontab entry; its command runs from a <run_python> block."""
    from daycare_cli.core.crontab import entry_task, parse_crontab

    cli = get_context(ctx)
    imported = []
    for path in files:
        name = "<stdin>" if str(path) == "-" else str(path)
        with_user = system
        if with_user is None:
            resolved = str(path.absolute())
            with_user = resolved == "/etc/crontab" or resolved.startswith("/etc/cron.d/")
        for entry in parse_crontab(_read(path), path=name, system=with_user):
            imported.append(entry_task(entry, path=name))
    _write_imports(cli, imported, dry_run)


def import_systemd_cmd(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(metavar="TIMER...", help=".timer files (the .service beside).")
    ],
    dry_run: DryRunOption = False,
) -> None:
    """Make a task of each timer and the service it starts."""
    from daycare_cli.core.import_systemd import parse_unit, service_task_file, timer_task
    from daycare_cli.core.imported import ImportFileError

    cli = get_context(ctx)
    imported = []
    for path in files:
        text = _read(path)
        unit = parse_unit(text, path=str(path))
        named = unit.last("Timer", "Unit")
        service_path = path.with_name(named[0] if named else path.stem + ".service")
        if not service_path.is_file():
            raise ImportFileError(
                f"no service {service_path.name} beside the timer",
                path=str(path),
                hint="put the .service file next to the .timer",
            )
        service_text = _read(service_path)
        original = None
        task_file = service_task_file(service_text, path=str(service_path))
        if task_file is not None and Path(task_file).is_file():
            from daycare_cli.store.tasks import read_entry

            entry = read_entry(Path(task_file))
            if entry.text is not None:
                original = (entry.text, entry.require())
        imported.append(
            timer_task(
                text,
                timer_path=str(path),
                service_text=service_text,
                service_path=str(service_path),
                original=original,
                default_zone=cli.default_zone,
            )
        )
    _write_imports(cli, imported, dry_run)
