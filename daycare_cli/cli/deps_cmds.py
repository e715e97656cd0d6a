"""`daycare deps sync|ls|prune`: the Python environments of blocks (run/envs.py)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from daycare_cli.cli import render
from daycare_cli.cli.context import CliContext, get_context
from daycare_cli.cli.params import JsonFlag, complete_task_id, group

if TYPE_CHECKING:
    from daycare_cli.core.task import Task
    from daycare_cli.run.envs import EnvCache, EnvInfo


def register(parent: typer.Typer) -> None:
    """Add the `deps` group to the root app."""
    app = group("deps", "Python environments of blocks: build ahead, list, prune.")
    app.command("sync")(sync)
    app.command("ls")(ls)
    app.command("prune")(prune)
    parent.add_typer(app)


def env_cache(cli: CliContext) -> EnvCache:
    """The environments of this home, built with config's `[deps]`."""
    from daycare_cli.run.envs import EnvCache

    return EnvCache(cli.paths.cache_dir, cli.config.deps)


def users(cli: CliContext, cache: EnvCache) -> tuple[dict[str, list[str]], list[str]]:
    """Environment key -> ids of the task files that need it now; and invalid task ids
    (what they need cannot be told)."""
    from daycare_cli.core.requirements import RequirementError, task_needs

    needed: dict[str, list[str]] = {}
    invalid: list[str] = []
    for entry in cli.store.list():
        if entry.task is None:
            invalid.append(entry.id)
            continue
        try:
            needs = task_needs(entry.task)
        except RequirementError:
            invalid.append(entry.id)
            continue
        for _, spec in needs:
            ids = needed.setdefault(cache.key(spec), [])
            if entry.id not in ids:
                ids.append(entry.id)
    return needed, invalid


def sync(
    ctx: typer.Context,
    task_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[TASK]...",
            help="Tasks whose environments to build (default: every valid task).",
            autocompletion=complete_task_id,
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build the Python environments tasks need now, so their first run does not wait."""
    from daycare_cli.cli.run_cmds import Progress
    from daycare_cli.core.errors import DependencyError
    from daycare_cli.run.envs import prepare_envs

    cli = get_context(ctx)
    tasks: list[Task] = (
        [cli.store.get(t) for t in task_ids]
        if task_ids
        else [e.task for e in cli.store.list() if e.task is not None]
    )
    cache = env_cache(cli)
    progress = Progress(quiet=as_json)
    records: list[dict[str, Any]] = []
    failed = 0
    for task in tasks:
        built: set[str] = set()

        def emit(event: str, _task: str = task.id, _built: set[str] = built, **f: Any) -> None:
            progress({"event": event, **f})
            if event in ("env.built", "env.failed"):
                cli.audit(event, _task, **f)
            if event == "env.built":
                _built.add(str(f.get("key")))

        try:
            envs = asyncio.run(prepare_envs(cache, task, emit))
        except DependencyError as exc:
            failed += 1
            if not as_json:
                render.render_error(exc)
            records.append({"task": task.id, "error": render.error_text(exc)})
            continue
        finally:
            progress.stop()
        for index, env in sorted(envs.items()):
            records.append(
                {"task": task.id, "block": index + 1, "key": env.key, "built": env.key in built}
            )
    if as_json:
        render.print_json(records)
    else:
        ready = {r["key"] for r in records if "key" in r}
        new = {r["key"] for r in records if r.get("built")}
        out = render.console()
        out.print(
            f"{len(ready)} environment{'s' if len(ready) != 1 else ''} ready "
            f"({len(new)} built) for {len(tasks)} task{'s' if len(tasks) != 1 else ''}"
        )
    if failed:
        raise typer.Exit(1)


def ls(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the environments in the cache: size, Python, packages and the tasks using them."""
    cli = get_context(ctx)
    cache = env_cache(cli)
    infos = cache.infos()
    needed, _ = users(cli, cache)
    if as_json:
        render.print_json([info_record(i, needed.get(i.key, [])) for i in infos])
        return
    if not infos:
        render.console().print(f"no environments in {render.display_path(cache.root)}")
        return
    rows = []
    for info in infos:
        rec = info_record(info, needed.get(info.key, []))
        packages = ", ".join(rec["dependencies"]) or "-"
        tasks = ", ".join(rec["tasks"]) or ("unused" if info.ready else "incomplete build")
        rows.append(
            [
                (info.key, "bold"),
                (size_text(info.size), ""),
                (str(rec["python_version"] or "-"), ""),
                (packages, ""),
                (tasks, "" if rec["tasks"] else "dim"),
            ]
        )
    render.print_table(["ENV", "SIZE", "PYTHON", "PACKAGES", "TASKS"], rows, shrink=(3, 4))
    total = sum(i.size for i in infos)
    render.console().print(f"{len(infos)} in {render.display_path(cache.root)}, {size_text(total)}")


def info_record(info: EnvInfo, tasks: list[str]) -> dict[str, Any]:
    """`deps ls --json`: one object an environment."""
    from datetime import UTC, datetime

    meta = info.meta
    return {
        "key": info.key,
        "path": str(info.path),
        "ready": info.ready,
        "size": info.size,
        "dependencies": list(meta.get("dependencies") or []),
        "python": meta.get("python"),
        "python_version": meta.get("python_version"),
        "built_at": meta.get("built_at"),
        "last_used": datetime.fromtimestamp(info.last_used, UTC).isoformat(timespec="seconds"),
        "tasks": tasks,
    }


def prune(
    ctx: typer.Context,
    min_age: Annotated[
        str,
        typer.Option(
            "--min-age",
            metavar="DURATION",
            help="Keep environments a run used more recently than this (e.g. 0, 30m, 2d).",
        ),
    ] = "1h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove environments no task file needs (and uv's download cache of them)."""
    from daycare_cli.core.duration import parse_duration
    from daycare_cli.core.errors import UsageError
    from daycare_cli.run.envs import unused

    try:
        age = parse_duration(min_age)
    except ValueError as exc:
        raise UsageError(f"--min-age: {exc}", hint="e.g. --min-age 0 or --min-age 2h") from None
    cli = get_context(ctx)
    cache = env_cache(cli)
    infos = cache.infos()
    needed, invalid = users(cli, cache)
    doomed = set(unused(infos, set(needed), min_age=age, now=time.time()))
    removed: list[EnvInfo] = []
    for info in infos:
        if info.key in doomed and (dry_run or cache.remove(info.key)):
            removed.append(info)
    if removed and not dry_run:
        cache.prune_uv_cache()
    freed = sum(i.size for i in removed)
    if as_json:
        render.print_json({"removed": [i.key for i in removed], "freed": freed, "dry_run": dry_run})
        return
    for task_id in invalid:
        render.warn(f"{task_id} is invalid: its environments count as unused until it is fixed")
    verb = "would remove" if dry_run else "removed"
    kept = len(infos) - len(removed)
    render.console().print(
        f"{verb} {len(removed)} environment{'s' if len(removed) != 1 else ''} "
        f"({size_text(freed)}), kept {kept}"
    )


def size_text(n: int) -> str:
    """Bytes for people: 812 KiB, 35.2 MiB, 1.4 GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit in ("B", "KiB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
