"""OCI wasm images: build, push, pull, inspect (registry client)."""
