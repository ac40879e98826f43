"""`meshwasm test-plugin`: run one HTTP exchange (or a soak of many) through a compiled plugin.

Every callback runs under a deadline (``--deadline``, wasmtime epoch interruption), so a plugin
that loops forever is stopped with a named error, and Ctrl-C stops it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from meshwasm import ui
from meshwasm.errors import UsageError


def _header(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"{option} {text!r}: want 'name: value'", hint=f"e.g. {option} 'x-user: alice'")
    return name.strip(), value.strip()


def _read_config(config: str | None) -> str | None:
    if config is None or not config.startswith("@"):
        return config
    path = Path(config[1:])
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageError(f"--config {config}: cannot read {path}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the root app."""

    @app.command("test-plugin")
    def test_plugin(
        wasm: Annotated[Path, typer.Argument(help="The compiled plugin (.wasm).")],
        config: Annotated[
            str | None, typer.Option("--config", help="Plugin configuration: JSON text, or @file.")
        ] = None,
        request: Annotated[
            str, typer.Option("--request", help="Request line: 'METHOD PATH' (authority from --host).")
        ] = "GET /",
        host: Annotated[str, typer.Option("--host", help=":authority of the request.")] = "example.com",
        header: Annotated[
            list[str] | None, typer.Option("-H", "--header", help="Request header 'name: value' (repeat).")
        ] = None,
        body: Annotated[str | None, typer.Option("--body", help="Request body.")] = None,
        status: Annotated[int, typer.Option("--status", help="Upstream response status.")] = 200,
        response_header: Annotated[
            list[str] | None,
            typer.Option("--response-header", help="Upstream response header 'name: value' (repeat)."),
        ] = None,
        response_body: Annotated[
            str | None, typer.Option("--response-body", help="Upstream response body.")
        ] = None,
        root_id: Annotated[str, typer.Option("--root-id", help="The plugin's root_id.")] = "",
        vm_config: Annotated[str | None, typer.Option("--vm-config", help="VM configuration.")] = None,
        strict: Annotated[
            bool, typer.Option("--strict", help="Fail on host calls Envoy would refuse in that state.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
        soak_streams: Annotated[
            int | None,
            typer.Option(
                "--soak",
                help="Run this many streams of the exchange through one VM and report memory growth;"
                " exit 1 if the plugin leaks.",
                min=1,
            ),
        ] = None,
        threshold: Annotated[
            float,
            typer.Option("--threshold", help="Soak: pages (64 KiB) per 1,000 streams that count as a leak."),
        ] = 2.0,
        deadline: Annotated[
            float,
            typer.Option(
                "--deadline", help="Seconds one callback may run (0: no deadline, and no Ctrl-C inside wasm)."
            ),
        ] = 10.0,
        memory_limit: Annotated[
            int,
            typer.Option(
                "--memory-limit", help="MiB of memory (linear plus held by the host) the plugin may use."
            ),
        ] = 1024,
    ) -> None:
        """Run one request/response through a plugin in meshwasm's host and show what it did."""
        from meshwasm.host.plugin import Plugin
        from meshwasm.host.soak import Exchange, soak

        method, _, path = request.strip().partition(" ")
        if not method or not path.strip().startswith("/"):
            raise UsageError(
                f"--request {request!r}: want 'METHOD /path'", hint="e.g. --request 'GET /headers'"
            )
        request_headers = [
            (":method", method),
            (":path", path.strip()),
            (":authority", host),
            (":scheme", "http"),
        ]
        request_headers += [_header(h, "-H") for h in header or []]
        response_headers = [(":status", str(status))] + [
            _header(h, "--response-header") for h in response_header or []
        ]
        with ui.status(f"loading {wasm}"):
            plugin = Plugin.load(
                wasm,
                config=_read_config(config),
                vm_config=vm_config,
                root_id=root_id,
                strict=strict,
                deadline=deadline or None,
                memory_limit=memory_limit << 20,
            )
        if soak_streams is not None:
            exchange = Exchange(
                request_headers=request_headers,
                request_body=body.encode() if body is not None else None,
                response_headers=response_headers,
                response_body=response_body.encode() if response_body is not None else None,
            )
            ui.info(f"soaking {wasm} with {soak_streams} streams (after a warm-up)")
            report = soak(
                plugin,
                soak_streams,
                exchange=exchange,
                threshold=threshold,
                progress=lambda done: ui.info(
                    f"  warm-up: {-done} streams" if done < 0 else f"  {done}/{soak_streams} streams"
                ),
            )
            if as_json:
                ui.stdout.print(json.dumps(_soak_json(report), indent=2), markup=False)
            elif not report.leaking:
                ui.stdout.print(report.text(), markup=False)
            report.check()  # a leak: the error carries the report
            return
        stream = plugin.http_stream()
        outcome: dict[str, Any] = {"actions": {}}
        outcome["actions"]["request_headers"] = int(
            stream.send_request_headers(request_headers, body is None)
        )
        if body is not None and stream.local_response is None:
            outcome["actions"]["request_body"] = int(stream.send_request_body(body.encode(), True))
        if stream.local_response is None:
            outcome["actions"]["response_headers"] = int(
                stream.send_response_headers(response_headers, response_body is None)
            )
            if response_body is not None:
                outcome["actions"]["response_body"] = int(
                    stream.send_response_body(response_body.encode(), True)
                )
        stream.complete()
        outcome["request_headers"] = stream.request_headers.pairs()
        outcome["request_body"] = stream.request_body.decode(errors="replace")
        local = stream.local_response
        if local is not None:
            outcome["local_response"] = {
                "status": local.status,
                "headers": local.headers.pairs(),
                "body": local.body.decode(errors="replace"),
            }
        else:
            outcome["response_headers"] = stream.response_headers.pairs()
            outcome["response_body"] = stream.response_body.decode(errors="replace")
        outcome["pending_http_calls"] = [
            {"upstream": c.upstream, "headers": c.headers.pairs()} for c in plugin.pending_http_calls
        ]
        outcome["metrics"] = plugin.metrics
        outcome["logs"] = [{"level": e.level_name, "message": e.message} for e in plugin.logs]
        outcome["violations"] = [f"{v.call}: {v.status.name}: {v.why}" for v in plugin.violations]
        if as_json:
            ui.stdout.print(json.dumps(outcome, indent=2), markup=False)
            return
        _print(outcome)


def _soak_json(report: Any) -> dict[str, Any]:
    return {
        "streams": report.streams,
        "warmup": report.warmup,
        "pages_before": report.pages_before,
        "pages_middle": report.pages_middle,
        "pages_after": report.pages_after,
        "pages_per_1000_streams": round(report.pages_per_1000, 3),
        "threshold": report.threshold,
        "leaking": report.leaking,
        "callbacks": [
            {"callback": c.callback, "grown_pages": c.pages, "host_allocations": c.host_allocations}
            for c in report.callbacks
        ],
    }


def _print(outcome: dict[str, Any]) -> None:
    out = ui.stdout
    actions = ", ".join(
        f"{phase}={'continue' if a == 0 else f'pause({a})'}" for phase, a in outcome["actions"].items()
    )
    out.print(f"actions: {actions}", markup=False)
    out.print("request headers (to upstream):", markup=False)
    for name, value in outcome["request_headers"]:
        out.print(f"  {name}: {value}", markup=False)
    if "local_response" in outcome:
        local = outcome["local_response"]
        out.print(f"local response: {local['status']} {local['body']!r}", markup=False)
        for name, value in local["headers"]:
            out.print(f"  {name}: {value}", markup=False)
    else:
        out.print("response headers (to client):", markup=False)
        for name, value in outcome["response_headers"]:
            out.print(f"  {name}: {value}", markup=False)
    for call in outcome["pending_http_calls"]:
        out.print(f"pending HTTP call to {call['upstream']}", markup=False)
    for name, value in outcome["metrics"].items():
        out.print(f"metric {name} = {value}", markup=False)
    for entry in outcome["logs"]:
        out.print(f"log [{entry['level']}] {entry['message']}", markup=False)
    for violation in outcome["violations"]:
        out.print(f"violation {violation}", markup=False)
