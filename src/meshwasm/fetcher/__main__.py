"""``python -m meshwasm.fetcher serve ...``: the fetcher's verbs alone (the container's entry point).

Only this area's modules are imported, so the image needs the fetcher's
dependencies, not Envoy, wasmtime or the build toolchains.
"""

from __future__ import annotations

import sys

from meshwasm.errors import MeshwasmError
from meshwasm.fetcher.cli import fetcher_app


def main() -> None:
    try:
        fetcher_app(standalone_mode=False)
    except MeshwasmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))


if __name__ == "__main__":
    main()
