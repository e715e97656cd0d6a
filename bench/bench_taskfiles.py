"""Reading task files: parse time of hostile files, event-loop lag while one is read, and a
worker thread against a worker process (docs/operations.md, "Faults"; bench/README.md, "The
figures").

1. parse time (`read_entry`, median of 5) of files built to be slow: 20,000 unclosed
   `<run_python>` tags, 20,000 closed blocks, 1,000 unnamed triggers, a 5,000-deep list,
   a 1 MiB body, a 1 MiB scalar, a file over 1 MiB;
2. event-loop lag while each is read the way the daemon's watcher reads a changed file
   (`read_settled` in a thread, with `ParseWorker.read`: a thread for files up to
   `THREAD_PARSE_MAX`, 8 KiB, a worker process above), beside the same read forced
   into a thread, forced into a process, and done on the loop itself. A timer that asks
   to wake every 1 ms measures how late it wakes: max and p99 over the read, median of
   5 reads;
3. one small changed file: wall time of a read in a thread and in a (warm) process;
4. 10,000 files (the daemon's start-up): one thread in the daemon's process (what the
   daemon does) against a pool of 2 worker processes.

Run: `.venv/bin/python bench/bench_taskfiles.py [--parse-only] [--files 10000]`. With
`--parse-only` it prints table 1 only, which also runs against an older checkout
(`cd OLD && python /path/to/bench_taskfiles.py --parse-only`) for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout being measured, before the installed one

from daycare_cli.store.tasks import read_entries, read_entry

HOSTILE: dict[str, str] = {
    "20,000 unclosed tags": "---\nname: x\n---\n" + "<run_python>\n" * 20_000,
    "20,000 blocks": "---\nexecute: true\n---\n"
    + "<run_python>\nprint(1)\n</run_python>\n" * 20_000,
    "1,000 unnamed triggers": "---\ntriggers:\n" + "  - every: 1m\n" * 1_000 + "---\nx\n",
    "5,000-deep list": "---\ntags:\n  " + "- " * 5_000 + "x\n---\nx\n",
    "1 MiB body": "---\nname: x\n---\n" + ("word " * 20 + "\n") * 9_900,
    "1 MiB scalar": '---\ndescription: "' + "a" * 1_040_000 + '"\n---\nbody\n',
    "2 MiB file": "---\nname: x\n---\n" + ("y" * 99 + "\n") * 21_000,
}
SMALL = '---\nschedule: "*/5 * * * *"\ntimezone: Europe/Berlin\n---\nCheck the logs.\n'


def write_files(root: Path) -> dict[str, Path]:
    paths = {}
    for i, (name, text) in enumerate(HOSTILE.items()):
        path = root / f"hostile-{i}.md"
        path.write_text(text)
        paths[name] = path
    return paths


def parse_table(paths: dict[str, Path]) -> None:
    print("| file | size | read_entry, median of 5 | result |")
    print("|---|---:|---:|---|")
    for name, path in paths.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            try:
                entry = read_entry(path)
                what = str(entry.error).split("\n")[0].split(": ", 1)[1] if entry.error else "valid"
            except Exception as exc:  # an older checkout: what escaped its reader
                what = f"raised {type(exc).__name__}"
            times.append(time.perf_counter() - t)
            if times[-1] > 5:
                break  # quadratic: one sample is enough
        size = path.stat().st_size
        print(f"| {name} | {size / 1024:,.0f} KiB | {statistics.median(times) * 1000:,.1f} ms "
              f"| {what[:60]} |")  # fmt: skip


async def lag_during(job: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """(seconds the job took, max and p99 lateness in ms of a 1 ms timer meanwhile)."""
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not done:
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - t - 0.001) * 1000)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t = time.perf_counter()
    await job()
    took = time.perf_counter() - t
    done = True
    await task
    lags.sort()
    return took, lags[-1], lags[int(len(lags) * 0.99)]


async def lag_table(paths: dict[str, Path]) -> None:
    from daycare_cli.daemon.watcher import SETTLE_S, ParseWorker
    from daycare_cli.store.tasks import read_settled

    worker = ParseWorker()
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(pool, read_entry, paths["5,000-deep list"])  # started, warm
    worker.read(paths["1 MiB body"])  # start the watcher's worker process too

    async def idle(_: Path) -> None:
        await asyncio.sleep(0.05)

    async def watcher(path: Path) -> None:
        await asyncio.to_thread(read_settled, [path], SETTLE_S, read=worker.read)

    async def thread(path: Path) -> None:
        await asyncio.to_thread(read_entry, path)

    async def process(path: Path) -> None:
        await loop.run_in_executor(pool, read_entry, path)

    async def on_loop(path: Path) -> None:
        read_entry(path)

    ways: dict[str, Callable[[Path], Awaitable[None]]] = {
        "nothing (50 ms idle)": idle,
        "the watcher's way": watcher,
        "thread": thread,
        "process": process,
        "on the loop": on_loop,
    }
    print("| file | read by | took ms | loop lag max ms | loop lag p99 ms |")
    print("|---|---|---:|---:|---:|")
    for name, path in paths.items():
        for way, run in ways.items():
            samples = [await lag_during(lambda r=run, p=path: r(p)) for _ in range(5)]  # type: ignore[misc]
            took = statistics.median(s[0] for s in samples) * 1000
            worst = statistics.median(s[1] for s in samples)
            p99 = statistics.median(s[2] for s in samples)
            print(f"| {name} | {way} | {took:,.1f} | {worst:.1f} | {p99:.1f} |")
    small = paths["1,000 unnamed triggers"].parent / "small.md"
    small.write_text(SMALL)
    print("\n| one small file (83 bytes) read by | median ms | p99 ms |")
    print("|---|---:|---:|")
    for way, run in (("thread", thread), ("process (warm)", process), ("on the loop", on_loop)):
        times = []
        for _ in range(300):
            t = time.perf_counter()
            await run(small)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(f"| {way} | {times[150]:.3f} | {times[296]:.3f} |")
    pool.shutdown()
    worker.close()


def chunks(paths: list[Path], n: int) -> list[list[Path]]:
    size = (len(paths) + n - 1) // n
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def startup_table(root: Path, count: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_daemon_scale import safe_minutes, task_text

    minutes = safe_minutes(datetime.now(UTC))
    paths = []
    for i in range(count):
        path = root / f"scale-{i:05d}.md"
        path.write_text(task_text(i, minutes))
        paths.append(path)
    read_entries(paths[:100])  # imports done
    print(f"\n| {count:,} files read by | wall s (each of 3 runs) |")
    print("|---|---|")
    rows: dict[str, list[float]] = {}
    for _ in range(3):
        t = time.perf_counter()
        read_entries(paths)
        rows.setdefault("the daemon's process, one thread", []).append(time.perf_counter() - t)
        for parts in (2, 40):
            t = time.perf_counter()
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(2, mp_context=ctx) as pool:
                entries = [e for part in pool.map(read_entries, chunks(paths, parts)) for e in part]
            assert len(entries) == count
            name = f"2 worker processes, {parts} chunks (start-up of the pool included)"
            rows.setdefault(name, []).append(time.perf_counter() - t)
    for name, times in rows.items():
        print(f"| {name} | {', '.join(f'{x:.2f}' for x in times)} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parse-only", action="store_true")
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_files(root)
        parse_table(paths)
        if args.parse_only:
            return
        print()
        asyncio.run(lag_table(paths))
        scale = root / "scale"
        scale.mkdir()
        startup_table(scale, args.files)
    print(f"\nload average after: {' '.join(os.getloadavg().__repr__()[1:-1].split(', '))}")


if __name__ == "__main__":
    main()
