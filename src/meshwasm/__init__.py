"""meshwasm: write, test, ship and run proxy-wasm extensions on Envoy gateways."""

__version__ = "0.1.0"
