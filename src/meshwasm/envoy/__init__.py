"""Everything about one real Envoy: config builders (pure), file-based xDS delivery, the process."""
