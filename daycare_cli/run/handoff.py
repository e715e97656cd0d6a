"""A run's hand-off to its model: the agent's request, its events, and what the run records.

The runner calls `hand_off` once the prompt is expanded; the tool loop itself is in
`agent.py`. See docs/task-file.md, "model and system".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daycare_cli.core.task import Task
from daycare_cli.run.rundir import write_file


async def hand_off(
    task: Task,
    model: str,
    text: str,
    *,
    trigger: str,
    payload: bytes | None,
    zone: str,
    memory_path: Path,
    response_path: Path,
    secrets: tuple[str, ...],
    emit: Callable[..., None],
    redact: Callable[[str], str],
) -> dict[str, Any]:
    """Give the expanded prompt `text` to `model` and return what the run's row takes
    from it (model, response, tokens; `status` only when the model skipped or failed).

    A webhook payload that no block read goes along as an untrusted section; the response
    is written (redacted) to `response_path`.
    """
    from daycare_cli.run.agent import AgentRequest, run_agent

    payload_text = None
    if payload is not None and not (task.execute and "payload" in task.body):
        payload_text = payload.decode("utf-8", "replace")
    emit("model.start", model=model)
    result = await run_agent(
        AgentRequest(
            model_id=model,
            prompt=text,
            system=task.system,
            task_id=task.id,
            task_name=task.name,
            trigger=trigger,
            now=datetime.now(UTC),
            tz=zone,
            memory_path=memory_path,
            payload_text=payload_text,
            secrets=secrets,
            redact_input=task.redact_model_input,
        ),
        on_event=lambda name, fields: emit(name, **fields),
    )
    emit(
        "model.end",
        model=model,
        status=result.status,
        duration_ms=result.duration_ms,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        tool_calls=result.tool_calls,
        error=result.error,
        attempts=result.attempts,
        retries=result.retries,
    )
    # A model that called skip has nothing to deliver: text it wrote beside the call
    # is not a response (as with a block's skip, its output is discarded).
    response = result.response if result.status != "skipped" else ""
    if response:
        await write_file(response_path, redact(response))
    step: dict[str, Any] = {
        "model": model,
        "response": response or None,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
    if result.status == "skipped":
        step.update(status="skipped", skip_reason=result.skip_reason or "skipped by model")
    elif result.status == "failed":
        step.update(status="failed", error=result.error or "model failed")
    return step
