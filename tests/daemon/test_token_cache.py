"""The webhook server remembers the tokens it found for a second, and forgets them when one
is rotated (`daycare webhook rotate` tells it), so a burst does not ask state.db per request
and a revoked URL still stops working at once."""

from __future__ import annotations

from pathlib import Path

from daycare_cli.daemon.server import TOKEN_FRESH, TOKEN_KEEP, TokenCache
from daycare_cli.store.state import State


class Counted:
    """The real `State.lookup_token`, counting how often it is asked."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.asked = 0

    def __call__(self, token: str) -> tuple[str, str] | None:
        self.asked += 1
        return self.state.lookup_token(token)


def test_a_found_token_is_asked_once_a_second_and_a_rotation_is_seen_after_forget(
    tmp_path: Path,
) -> None:
    state = State.open(tmp_path / "state.db")
    token = state.issue_token("hook", "webhook")
    lookup, now = Counted(state), [100.0]
    cache = TokenCache(lookup, clock=lambda: now[0])

    assert [cache.get(token) for _ in range(1000)] == [("hook", "webhook")] * 1000
    assert lookup.asked == 1
    now[0] += TOKEN_FRESH  # a second later state.db is asked again
    assert cache.get(token) == ("hook", "webhook") and lookup.asked == 2

    new = state.rotate_token("hook", "webhook")
    assert cache.get(token) == ("hook", "webhook")  # not told yet: trusted < TOKEN_FRESH
    cache.forget()
    assert cache.get(token) is None
    assert cache.get(new) == ("hook", "webhook")
    now[0] += TOKEN_FRESH / 2
    assert cache.get(token) is None  # a revoked token is never remembered
    assert lookup.asked == 5


def test_unknown_tokens_are_never_remembered_and_the_cache_is_bounded(tmp_path: Path) -> None:
    state = State.open(tmp_path / "state.db")
    tokens = [state.issue_token(f"t{i}", "webhook") for i in range(TOKEN_KEEP + 5)]
    lookup = Counted(state)
    cache = TokenCache(lookup, clock=lambda: 0.0)
    for _ in range(3):
        assert cache.get("not-a-token") is None
    assert lookup.asked == 3
    for i, token in enumerate(tokens):
        assert cache.get(token) == (f"t{i}", "webhook")
    assert len(cache._found) <= TOKEN_KEEP
