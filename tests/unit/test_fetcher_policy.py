"""Pull policy decisions (Istio's semantics)."""

from __future__ import annotations

from meshwasm.fetcher.config import PullPolicy
from meshwasm.fetcher.policy import Action, decide, effective_policy
from meshwasm.fetcher.urls import classify

DIGEST = "sha256:" + "b" * 64


def test_latest_tag_is_always_pulled_by_default() -> None:
    assert (
        effective_policy(classify("oci://r.io/a:latest"), PullPolicy.IF_NOT_PRESENT, ()) is PullPolicy.ALWAYS
    )
    # Istio: an untagged image follows the default (IfNotPresent), it is not ":latest".
    assert (
        effective_policy(classify("oci://r.io/a"), PullPolicy.IF_NOT_PRESENT, ()) is PullPolicy.IF_NOT_PRESENT
    )


def test_other_tags_follow_the_configured_default() -> None:
    src = classify("oci://r.io/a:v1")
    assert effective_policy(src, PullPolicy.IF_NOT_PRESENT, ()) is PullPolicy.IF_NOT_PRESENT
    assert effective_policy(src, PullPolicy.ALWAYS, ()) is PullPolicy.ALWAYS
    assert effective_policy(src, PullPolicy.IF_NOT_PRESENT, ("oci://r.io/",)) is PullPolicy.ALWAYS


def test_a_pinned_digest_never_needs_the_registry_again() -> None:
    src = classify(f"oci://r.io/a:latest@{DIGEST}")
    assert effective_policy(src, PullPolicy.ALWAYS, ("oci://r.io/",)) is PullPolicy.IF_NOT_PRESENT


def test_nothing_cached_means_pull() -> None:
    d = decide(
        policy=PullPolicy.IF_NOT_PRESENT, cached_checksum=None, last_checked=None, now=0, resolve_interval=1
    )
    assert d.action is Action.PULL


def test_if_not_present_serves_what_is_cached() -> None:
    d = decide(
        policy=PullPolicy.IF_NOT_PRESENT, cached_checksum="c", last_checked=0, now=1e9, resolve_interval=1
    )
    assert (d.action, d.checksum) == (Action.SERVE, "c")


def test_always_revalidates_at_most_once_per_interval() -> None:
    kwargs = {"policy": PullPolicy.ALWAYS, "cached_checksum": "c", "resolve_interval": 30.0}
    assert decide(last_checked=100.0, now=129.0, **kwargs).action is Action.SERVE  # type: ignore[arg-type]
    assert decide(last_checked=100.0, now=130.0, **kwargs).action is Action.REVALIDATE  # type: ignore[arg-type]
    assert decide(last_checked=None, now=0.0, **kwargs).action is Action.REVALIDATE  # type: ignore[arg-type]
