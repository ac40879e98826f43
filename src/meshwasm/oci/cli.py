"""Command-line verbs for the oci area: ``meshwasm image build|push|pull|inspect``.

Results go to stdout (digests, paths) so scripts can read them; progress bars go to stderr
and ``meshwasm --quiet`` silences them. Errors exit with the codes in :class:`meshwasm.errors.ExitCode`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshwasm import ui
from meshwasm.errors import MeshwasmError, UsageError
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import (
    DEFAULT_MAX_MODULE_SIZE,
    VARIANTS,
    Variant,
    build_image,
    read_wasm_file,
    write_layout,
)
from meshwasm.oci.reference import Reference, parse_reference

if TYPE_CHECKING:
    from meshwasm.oci.client import RegistryClient

image_app = typer.Typer(
    help="Build, push, pull and inspect wasm images (no Docker needed).", no_args_is_help=True
)

VariantOption = Annotated[
    str, typer.Option("--variant", help="Image variant: compat (tar+gzip layer) or oci (raw wasm layer).")
]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="Allow plain http (and unverified TLS) to this registry.")
]
UsernameOption = Annotated[str | None, typer.Option("--username", "-u", help="Registry username.")]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the registry password from stdin.")
]
DockerConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--docker-config", help="Docker config.json with credentials [default: ~/.docker/config.json]."
    ),
]
AnnotationOption = Annotated[
    list[str] | None, typer.Option("--annotation", "-a", help="Manifest annotation K=V (repeatable).")
]


def register(app: typer.Typer) -> None:
    """Add the ``image`` verbs to the root app."""
    from meshwasm.oci.signing.cli import register as register_signing

    register_signing(image_app)
    app.add_typer(image_app, name="image")


def _variant(value: str) -> Variant:
    if value not in VARIANTS:
        raise UsageError(f"unknown --variant {value!r}", hint="use compat or oci")
    return value


def _annotations(pairs: list[str] | None, *, source: str | None, created: bool) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotation {pair!r} is not KEY=VALUE")
        result[key] = value
    if source:
        result[mt.SOURCE_ANNOTATION] = source
    if created:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        moment = datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else datetime.now(UTC)
        result[mt.CREATED_ANNOTATION] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return result


def _client(
    ref: Reference,
    *,
    insecure: bool,
    username: str | None,
    password_stdin: bool,
    docker_config: Path | None,
    max_size: int = DEFAULT_MAX_MODULE_SIZE,
    chunk_size: int | None = None,
    pull_timeout: float | None = None,
) -> RegistryClient:
    from meshwasm.oci.client import (
        RegistryClient,  # httpx: imported only by the verbs that talk to registries
    )

    credentials = Credentials.from_docker_config(docker_config)
    if password_stdin and not username:
        raise UsageError("--password-stdin needs --username")
    if username:
        if not password_stdin:
            raise UsageError("--username needs --password-stdin (passwords are never taken as arguments)")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: nothing was read from stdin")
        credentials = credentials.merged(Credentials.explicit(username, password, ref.registry))
    return RegistryClient(
        credentials=credentials,
        insecure=[ref.registry] if insecure else [],
        max_module_size=max_size,
        chunk_size=chunk_size,
        pull_timeout=pull_timeout,
    )


@contextmanager
def _bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A transfer bar whose total is learnt from the first progress report."""
    with ui.transfer(description, None) as progress:
        task = progress.add_task(description, total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield report


@image_app.command("build")
def build_cmd(
    wasm: Annotated[Path, typer.Argument(help="The .wasm module to package.")],
    tag: Annotated[
        str, typer.Option("-t", "--tag", help="Image reference, e.g. localhost:5000/add-header:v1.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Layout directory [default: build/oci/<repository>]."),
    ] = None,
    variant: VariantOption = "compat",
    annotation: AnnotationOption = None,
    source: Annotated[
        str | None, typer.Option("--source", help="org.opencontainers.image.source annotation.")
    ] = None,
    created: Annotated[
        bool,
        typer.Option("--created", help="Add org.opencontainers.image.created (SOURCE_DATE_EPOCH or now)."),
    ] = False,
) -> None:
    """Build an OCI image layout holding WASM, reproducibly (same inputs, same digest)."""
    ref = parse_reference(tag)
    module = read_wasm_file(wasm)
    image = build_image(
        module,
        variant=_variant(variant),
        annotations=_annotations(annotation, source=source, created=created),
        source=str(wasm),
    )
    target = output or Path("build") / "oci" / ref.repository.rsplit("/", 1)[-1]
    write_layout(image, target, tag=ref.tag or "latest")
    ui.stdout.print(f"layout:  {target}")
    ui.stdout.print(f"image:   {ref}")
    ui.stdout.print(f"variant: {image.variant}")
    ui.stdout.print(f"digest:  {image.manifest_digest}")


@image_app.command("push")
def push_cmd(
    source: Annotated[Path, typer.Argument(help="An OCI layout directory, or a .wasm (built on the fly).")],
    reference: Annotated[str, typer.Argument(help="Where to push, e.g. localhost:5000/add-header:v1.")],
    variant: VariantOption = "compat",
    annotation: AnnotationOption = None,
    insecure: InsecureOption = False,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    docker_config: DockerConfigOption = None,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", help="Upload in chunks of this many bytes (default: one PUT)."),
    ] = None,
) -> None:
    """Push an image layout (or a .wasm as an image) to a registry; prints the manifest digest."""
    ref = parse_reference(reference)
    client = _client(
        ref, insecure=insecure, username=username, password_stdin=password_stdin,
        docker_config=docker_config, chunk_size=chunk_size,
    )  # fmt: skip
    with client, _bar(f"pushing {ref}") as report:
        if source.is_dir():
            digest = client.push_layout(source, ref, progress=report)
        else:
            image = build_image(
                read_wasm_file(source),
                variant=_variant(variant),
                annotations=_annotations(annotation, source=None, created=False),
                source=str(source),
            )
            digest = client.push_image(image, ref, progress=report)
    ui.stdout.print(f"{ref.name}@{digest}")


@image_app.command("pull")
def pull_cmd(
    reference: Annotated[str, typer.Argument(help="The image, e.g. localhost:5000/add-header:v1.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write plugin.wasm into.")],
    insecure: InsecureOption = False,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    docker_config: DockerConfigOption = None,
    max_size: Annotated[
        int, typer.Option("--max-size", help="Refuse modules larger than this many bytes.")
    ] = DEFAULT_MAX_MODULE_SIZE,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Give up when the whole pull takes longer than this many seconds."),
    ] = 300.0,
) -> None:
    """Pull a wasm image and write its module as DIR/plugin.wasm (nothing is written on failure).

    The module streams to a temporary file beside the target and is verified there (digests,
    size, ``\\0asm``) before it is renamed into place: memory does not grow with the module.
    """
    if timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {timeout:g}")
    ref = parse_reference(reference)
    client = _client(
        ref, insecure=insecure, username=username, password_stdin=password_stdin,
        docker_config=docker_config, max_size=max_size, pull_timeout=timeout,
    )  # fmt: skip
    target = output / mt.PLUGIN_FILE
    with _output_dir(output), client, _bar(f"pulling {ref}") as report:
        module = client.pull_to_dir(ref, output, progress=report)
        try:
            os.replace(module.path, target)
        finally:
            module.path.unlink(missing_ok=True)
    ui.stdout.print(f"path:    {target}")
    ui.stdout.print(f"sha256:  {module.sha256}")
    ui.stdout.print(f"size:    {module.size} bytes")
    ui.stdout.print(f"variant: {module.variant}")
    ui.stdout.print(f"digest:  {module.manifest_digest}")


@contextmanager
def _output_dir(output: Path) -> Iterator[None]:
    """The pull's output directory, created if needed and removed again (when empty) if the pull
    fails; local write failures (a full disk, a read-only directory) are named, not raised raw."""
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {output}: {exc.strerror or exc}") from exc
    try:
        yield
    except BaseException as exc:
        if created:
            with suppress(OSError):
                output.rmdir()
        if isinstance(exc, OSError):
            raise MeshwasmError(
                f"cannot write the module into {output}: {exc.strerror or exc}",
                hint="free space, or pull into a writable directory (-o)",
            ) from exc
        raise


@image_app.command("inspect")
def inspect_cmd(
    reference: Annotated[str, typer.Argument(help="The image, e.g. localhost:5000/add-header:v1.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    insecure: InsecureOption = False,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    docker_config: DockerConfigOption = None,
) -> None:
    """Show an image's manifest digest, variant, layers and module size."""
    ref = parse_reference(reference)
    client = _client(
        ref, insecure=insecure, username=username, password_stdin=password_stdin, docker_config=docker_config
    )
    with client:
        info = client.inspect(ref)
    if as_json:
        ui.stdout.print(json.dumps(info.to_json(), indent=2), markup=False)
        return
    ui.stdout.print(f"image:       {info.reference}", markup=False)
    ui.stdout.print(f"digest:      {info.digest}")
    if info.index_digest:
        ui.stdout.print(f"index:       {info.index_digest}")
    ui.stdout.print(f"mediaType:   {info.media_type}")
    ui.stdout.print(f"variant:     {info.variant or 'none (not a wasm image)'}")
    if info.config:
        ui.stdout.print(
            f"config:      {info.config.media_type} {info.config.digest} ({info.config.size} bytes)"
        )
    for i, layer in enumerate(info.layers):
        ui.stdout.print(f"layer[{i}]:    {layer.media_type} {layer.digest} ({layer.size} bytes)")
    for key, value in sorted(info.annotations.items()):
        ui.stdout.print(f"annotation:  {key}={value}", markup=False)
    if info.module_size is not None:
        ui.stdout.print(f"module size: {info.module_size} bytes")


@image_app.command("registry")
def registry_cmd(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 [default: a free one].")] = 0,
    storage: Annotated[
        Path, typer.Option("--storage", help="Working directory (storage, config, log).")
    ] = Path("build/registry"),
) -> None:
    """Run a local OCI registry (CNCF distribution) on loopback until interrupted."""
    from meshwasm.oci.local_registry import LocalRegistry

    registry = LocalRegistry(storage, port=port or None)

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the registry too (the finally below)

    signal.signal(signal.SIGTERM, _terminate)
    registry.start()
    try:
        registry.wait_ready()
        ui.stdout.print(f"registry: {registry.address}  (log: {registry.log_path}, pid {registry.pid})")
        while registry.alive():
            time.sleep(0.5)
        registry.ensure_alive()
    finally:
        registry.stop()
