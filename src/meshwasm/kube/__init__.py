"""Talking to any Kubernetes cluster: ``meshwasm apply`` (server-side apply, diff, prune)."""
