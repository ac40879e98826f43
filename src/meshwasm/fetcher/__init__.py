"""The wasmfetcher service: pulls wasm images from registries and serves modules to gateways."""
