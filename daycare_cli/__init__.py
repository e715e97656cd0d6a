"""daycare: Markdown task files with schedules, sandboxed Python blocks and an optional LLM."""

from __future__ import annotations

__version__ = "0.1.0"
