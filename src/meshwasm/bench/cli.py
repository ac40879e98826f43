"""``meshwasm bench PLUGIN.wasm``: what a plugin costs a real Envoy (see docs/bench.md)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from meshwasm import ui


def register(app: typer.Typer) -> None:
    """Add this area's verb to the root app."""

    @app.command("bench")
    def bench(
        plugin: Annotated[Path, typer.Argument(help="The compiled plugin (.wasm).")],
        config: Annotated[
            str | None, typer.Option("--config", help="Plugin configuration: JSON text, or @file.")
        ] = None,
        against: Annotated[
            str,
            typer.Option(
                "--against",
                help="Baseline besides no filter: 'native' (Envoy's header_mutation adding a header), "
                "'none', or another .wasm (run with the same --config).",
            ),
        ] = "native",
        workers: Annotated[
            str, typer.Option("--workers", help="Envoy worker counts to measure, comma-separated.")
        ] = "1,2",
        rounds: Annotated[int, typer.Option("--rounds", help="Interleaved rounds.")] = 5,
        seconds: Annotated[int, typer.Option("--seconds", help="Load per variant per round (whole s).")] = 3,
        warmup: Annotated[int, typer.Option("--warmup", help="Seconds of load per Envoy first.")] = 1,
        connections: Annotated[int, typer.Option("--connections", help="wrk's connections.")] = 8,
        path: Annotated[str, typer.Option("--path", help="Request path.")] = "/",
        header: Annotated[
            list[str] | None, typer.Option("-H", "--header", help="Request header 'name: value' (repeat).")
        ] = None,
        root_id: Annotated[str, typer.Option("--root-id", help="The plugin's root_id.")] = "",
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
        png: Annotated[Path | None, typer.Option("--png", help="Write a chart (needs matplotlib).")] = None,
        compare: Annotated[
            Path | None,
            typer.Option("--compare", help="A report (--json) of an earlier build to compare with."),
        ] = None,
    ) -> None:
        """Measure what a plugin costs a real Envoy: CPU per request, latency, memory, cold start."""
        from meshwasm.bench import chart, plan, render, report, runner
        from meshwasm.bench.compare import compare as compare_reports
        from meshwasm.errors import UsageError

        counts = plan.parse_workers(workers)
        if not path.startswith("/"):
            raise UsageError(f"--path {path!r}: want a path starting with /")
        headers = tuple(header or [])
        for h in headers:
            if ":" not in h or not h.partition(":")[0].strip():
                raise UsageError(f"-H {h!r}: want 'name: value'", hint="e.g. -H 'authorization: Bearer x'")
        settings = runner.Settings(
            rounds=rounds, seconds=seconds, warmup=warmup, connections=connections, path=path, headers=headers
        )
        settings.check()
        plugin_config = plan.read_config(config)
        chosen = plan.plan(plugin, config=plugin_config, against=against, root_id=root_id)
        old = report.load(compare) if compare else None
        if png:
            chart.require_matplotlib()

        workdir = Path(tempfile.mkdtemp(prefix="meshwasm-bench-"))
        try:
            measured, meta = runner.run(
                chosen.variants, workers=counts, settings=settings, workdir=workdir, progress=ui.info
            )
        except BaseException:
            ui.info(f"Envoy's configs and logs are kept in {workdir}")
            raise
        shutil.rmtree(workdir, ignore_errors=True)

        result = report.build(
            measured, meta, plugin=chosen.plugin, against=chosen.against, config=plugin_config
        )
        out = render.wide_console(ui.stdout)
        out.print(render.report_renderable(result))
        if old is not None and compare is not None:
            if old.meta.rounds < 3 or result.meta.rounds < 3:
                ui.info("fewer than 3 rounds on a side: its band is narrow, a change may be noise")
            out.print(render.compare_table(compare_reports(old, result), old_name=str(compare)))
        if json_out:
            from meshwasm.fsutil import write_atomic

            write_atomic(json_out, (result.to_json() + "\n").encode())
            ui.info(f"report: {json_out}")
        if png:
            chart.report_chart(result, png)
            ui.info(f"chart: {png}")
