"""Reading WebAssembly binaries without running them."""

from meshwasm.wasm.binary import WASM_MAGIC, ModuleInfo, inspect_module, read_module

__all__ = ["WASM_MAGIC", "ModuleInfo", "inspect_module", "read_module"]
