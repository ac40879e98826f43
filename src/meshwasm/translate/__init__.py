"""Pure translations: TSB resources to Istio resources to Envoy configuration.

- :func:`tsb_to_istio` (a loaded TSB tree -> :class:`IstioResources`)
- :func:`istio_to_envoy` (:class:`IstioResources` for one workload -> :class:`EnvoyConfig`)

Both raise :class:`TranslationError` listing every problem; neither does I/O.
"""

from meshwasm.translate.config_schema import ConfigSchema, ConfigViolation, validate_config
from meshwasm.translate.errors import TranslationError
from meshwasm.translate.istio_resources import IstioResources
from meshwasm.translate.istio_to_envoy import (
    EnvoyConfig,
    FilterConfigSourceFactory,
    cluster_name,
    failure_policy,
    filter_name,
    istio_to_envoy,
    module_url,
    upstream_key,
)
from meshwasm.translate.merge import merge_config
from meshwasm.translate.tsb_to_istio import DEFAULT_FETCHER_BASE, fetcher_url, tsb_to_istio

__all__ = [
    "DEFAULT_FETCHER_BASE",
    "ConfigSchema",
    "ConfigViolation",
    "EnvoyConfig",
    "FilterConfigSourceFactory",
    "IstioResources",
    "TranslationError",
    "cluster_name",
    "failure_policy",
    "fetcher_url",
    "filter_name",
    "istio_to_envoy",
    "merge_config",
    "module_url",
    "tsb_to_istio",
    "upstream_key",
    "validate_config",
]
