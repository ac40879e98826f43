"""A proxy-wasm host on wasmtime for unit-testing compiled plugins from Python."""
