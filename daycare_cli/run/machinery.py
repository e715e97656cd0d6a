"""What runs blocks, loaded when first needed: a daemon whose tasks have no blocks never
holds it (run/blocks.py, run/sandbox.py, run/envs.py and what they import), and the
daemon's start does not pay for it (its sandbox probe runs in a child,
daemon/sandboxprobe.py).
"""

from __future__ import annotations

import asyncio

from daycare_cli.config import Config

_blocks_loaded = False


def load_block_machinery(config: Config) -> None:
    """Import what runs blocks and probe the sandbox (cached by `run/sandbox.py`): ~60 ms
    the first time, which a run does off the loop. The daemon's start no longer does it
    (its probe runs in a child, `daemon/sandboxprobe.py`)."""
    global _blocks_loaded
    import daycare_cli.run.blocks
    import daycare_cli.run.envs  # noqa: F401
    from daycare_cli.run.sandbox import isolation_level

    isolation_level(config.sandbox_isolation, config.sandbox_bwrap)
    _blocks_loaded = True


async def ensure_block_machinery(config: Config) -> None:
    """`load_block_machinery` once, off the loop (a run with blocks, a sandbox started
    ahead of a fire: daemon/ahead.py)."""
    if not _blocks_loaded:
        await asyncio.to_thread(load_block_machinery, config)
