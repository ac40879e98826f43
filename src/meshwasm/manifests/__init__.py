"""Typed models of TSB, Istio and core Kubernetes resources, and loading kustomize trees."""
