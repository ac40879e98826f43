"""The local gateway: agent, Envoy process, xDS delivery, upstreams (`meshwasm up`)."""
