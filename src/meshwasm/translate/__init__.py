"""Pure translations: TSB resources to Istio resources to Envoy configuration."""
