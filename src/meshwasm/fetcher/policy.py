"""Pull policy, as Istio's agent applies it (pure: data in, decision out).

- a digest-pinned reference is a cache hit once present (its content cannot change);
- ``IfNotPresent`` (the default) serves what the cache holds for the URL;
- ``Always`` (the default for ``:latest``, or configured) re-resolves the URL,
  at most once per ``resolve_interval`` seconds, and keeps serving the cached
  module until a new one has been pulled and verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from meshwasm.fetcher.config import PullPolicy
from meshwasm.fetcher.urls import ModuleSource


class Action(StrEnum):
    SERVE = "serve"  # the cached module, no network
    PULL = "pull"  # nothing usable cached: pull, the request waits
    REVALIDATE = "revalidate"  # cached module exists, but check the source for a newer one


@dataclass(frozen=True)
class Decision:
    action: Action
    checksum: str | None  # the cached checksum to serve (SERVE, REVALIDATE) or None


def effective_policy(source: ModuleSource, default: PullPolicy, always: Sequence[str]) -> PullPolicy:
    if source.pinned_digest is not None:
        return PullPolicy.IF_NOT_PRESENT
    if source.is_latest or any(source.url.startswith(prefix) for prefix in always):
        return PullPolicy.ALWAYS
    return default


def decide(
    *,
    policy: PullPolicy,
    cached_checksum: str | None,
    last_checked: float | None,
    now: float,
    resolve_interval: float,
) -> Decision:
    """What to do for a request, given what the cache holds for its URL.

    ``cached_checksum`` is the checksum the URL is known to map to AND that is in
    the cache (None when either is missing); ``last_checked`` is when the source
    was last asked (successfully or not).
    """
    if cached_checksum is None:
        return Decision(Action.PULL, None)
    if policy is PullPolicy.IF_NOT_PRESENT:
        return Decision(Action.SERVE, cached_checksum)
    if last_checked is not None and now - last_checked < resolve_interval:
        return Decision(Action.SERVE, cached_checksum)
    return Decision(Action.REVALIDATE, cached_checksum)
