"""The models a task can name: lookup through `llm`, their keys, and what `doctor` says.

Keys follow `llm`'s own order (a key stored with `llm keys set NAME`, else the model's
environment variable) with one exception: a model that talks to a server of its own
(`api_base` in extra-openai-models.yaml, with an `api_key_name`) never falls back to the
environment variable of the provider whose client it borrows. Otherwise a missing key for
a local or third-party server would quietly send `OPENAI_API_KEY` there, and the hint for
a missing key would suggest exactly that.

`llm` is imported inside functions so that commands which never talk to a model stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import llm

    AnyModel = llm.AsyncModel | llm.Model

ERROR_LIMIT = 300
USERS_SHOWN = 5  # tasks named per model in doctor's line

KeyState = Literal["not needed", "set", "missing"]


def sentence(text: str) -> str:
    """First line of an error message, bounded, so that errors stay one sentence."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    if len(first) > ERROR_LIMIT:
        first = first[: ERROR_LIMIT - 1] + "…"
    return first.rstrip(".")


def find_model(model_id: str) -> tuple[AnyModel | None, str]:
    """The async model for an id or alias (a sync one if that is all there is), or an error.

    Every call returns fresh model objects (llm builds them per lookup), so a run may
    adjust its own without touching another's.
    """
    import llm

    try:
        return llm.get_async_model(model_id), ""
    except llm.UnknownModelError:
        pass
    try:
        return llm.get_model(model_id), ""
    except llm.UnknownModelError:
        return None, (
            f"unknown model '{model_id}'; run `llm models` to list the models llm knows, "
            "or install the plugin that provides it"
        )


def api_base(model: AnyModel) -> str | None:
    """The server a model of llm's OpenAI family talks to, when it is not OpenAI's own."""
    base = getattr(model, "api_base", None)
    return str(base) if base else None


def key_env_var(model: AnyModel) -> str | None:
    """The environment variable a model may take its key from, if any.

    None for a model with its own `api_base` whose key name was set per model
    (extra-openai-models.yaml's `api_key_name`): the variable it inherits belongs to
    another provider. A plugin that declares its own key name and variable keeps both.
    """
    env = getattr(model, "key_env_var", None)
    if not env:
        return None
    declared = getattr(type(model), "needs_key", None)
    if api_base(model) and model.needs_key != declared:
        return None
    return str(env)


def key_hint(model: AnyModel) -> str:
    """How to give the model its key: `llm keys set NAME`, or its own variable."""
    hint = f"`llm keys set {model.needs_key}`"
    env = key_env_var(model)
    if env:
        hint += f" or set {env}"
    return hint


def key_state(model: AnyModel) -> KeyState:
    """Whether the model needs a key and whether one is there (by the rules above)."""
    import llm

    if not getattr(model, "needs_key", None):
        return "not needed"
    if getattr(model, "key", None):
        return "set"
    found = llm.get_key(alias=model.needs_key, env=key_env_var(model))
    return "set" if found else "missing"


def key_problem(model: AnyModel) -> str | None:
    """A one-sentence error when the model needs a key that cannot be found, else None."""
    if key_state(model) != "missing":
        return None
    return f"model '{model.model_id}' has no API key; add one with {key_hint(model)}"


def supports_tools(model: AnyModel) -> bool:
    """Whether the model can call tools (else skip and remember are not offered)."""
    return bool(getattr(model, "supports_tools", False))


def model_known(model_id: str) -> tuple[bool, str]:
    """(ok, message); ok when llm knows the model and has its key."""
    try:
        model, error = find_model(model_id)
    except Exception as exc:  # a broken plugin must not crash doctor
        return False, f"llm could not load its models: {sentence(str(exc))}"
    if model is None:
        return False, error
    problem = key_problem(model)
    if problem:
        return False, problem
    alias = "" if model.model_id == model_id else f" (alias of {model.model_id})"
    return True, f"model '{model_id}'{alias} is available"


@dataclass(frozen=True)
class ModelCheck:
    """One line of `daycare doctor` about a model: check name, ok|warn|fail, detail."""

    name: str
    level: str
    detail: str


def _describe(model_id: str, used_by: list[str]) -> tuple[str, str]:
    """(level, detail) for one model id."""
    shown = ", ".join(used_by[:USERS_SHOWN])
    more = len(used_by) - USERS_SHOWN
    users = f"; used by {shown}" + (f" and {more} more" if more > 0 else "") if used_by else ""
    try:
        model, error = find_model(model_id)
    except Exception as exc:  # a broken plugin must not crash doctor
        return "fail", f"llm could not load its models: {sentence(str(exc))}"
    if model is None:
        return "fail", error + users
    alias = "" if model.model_id == model_id else f" (alias of {model.model_id})"
    base = api_base(model)
    where = f" at {base}" if base else ""
    state = key_state(model)
    if state == "missing":
        key = f"no API key: add one with {key_hint(model)}"
    elif state == "set":
        key = f"key set ({model.needs_key})"
    else:
        key = "no key needed"
    tools = (
        "tools: yes" if supports_tools(model) else "tools: no (skip and remember are not offered)"
    )
    level = "fail" if state == "missing" else "ok"
    return level, f"model '{model_id}'{alias}{where} is available; {key}; {tools}{users}"


def model_checks(
    default: str | None, task_models: Iterable[tuple[str, str | None]]
) -> list[ModelCheck]:
    """Doctor's lines about every model daycare would use.

    `default` is config's `model`; `task_models` are (task id, its `model:`) pairs. The
    default's line is named `model`, a model only tasks name is `model NAME`. Each says
    whether llm knows it, whether its key is there, and whether it can call tools.
    """
    users: dict[str, list[str]] = {}
    for task_id, name in task_models:
        if name and name.lower() != "none":
            users.setdefault(name, []).append(task_id)
    checks: list[ModelCheck] = []
    if default and default.lower() != "none":
        level, detail = _describe(default, [])
        checks.append(ModelCheck("model", level, detail))
    else:
        checks.append(
            ModelCheck("model", "ok", "no default model: tasks without `model:` are reminders")
        )
    for name in sorted(users):
        if default and name == default:
            continue
        level, detail = _describe(name, sorted(users[name]))
        checks.append(ModelCheck(f"model {name}", level, detail))
    return checks
