"""Building plugins from source into proxy-wasm modules.

Each toolchain module knows one language; :func:`build_plugin` picks the one
that matches the plugin directory and checks what it produced.
"""

from meshwasm.toolchain.build import BuildResult, build_plugin, detect_toolchain

__all__ = ["BuildResult", "build_plugin", "detect_toolchain"]
