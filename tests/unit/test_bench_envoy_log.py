"""meshwasm.bench.envoy_log: the plugin's refusal, the VM's fault and Envoy's own reason, from
Envoy 1.40 log lines captured here."""

from __future__ import annotations

from meshwasm.bench import envoy_log

REFUSED = """\
[2026-11-29 21:33:38.196][31928][critical][wasm] [source/extensions/common/wasm/context.cc:1160] wasm log p: invalid configuration: value: missing (required)
[2026-11-29 21:33:38.196][31928][error][wasm] [source/extensions/common/wasm/wasm.cc:104] Wasm VM failed Failed to configure base Wasm plugin
[2026-11-29 21:33:38.210][31928][critical][wasm] [source/extensions/common/wasm/wasm.cc:626] Plugin p failed to load
[2026-11-29 21:33:38.210][31928][critical][main] [source/server/server.cc:449] error `Unable to create Wasm plugin p` initializing config 'goo.gle/debugstr
  bad.json'
Unable to create Wasm plugin p
"""  # noqa: E501

TRAPPED = """\
[2026-11-29 21:33:45.971][32128][warning][main] [source/server/server.cc:1059] There is no configured limit to the number of allowed active downstream connections.
[2026-11-29 21:33:48.505][32152][error][wasm] [source/extensions/common/wasm/wasm_vm.cc:38] Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable
"""  # noqa: E501

MISSING_IMPORT = """\
[2026-11-29 21:41:17.101][19332][error][wasm] [source/extensions/common/wasm/wasm_vm.cc:38] Failed to load Wasm module due to a missing import: env.proxy_no_such_call
[2026-11-29 21:41:17.102][19332][error][wasm] [source/extensions/common/wasm/wasm.cc:104] Wasm VM failed Failed to initialize Wasm code
Unable to create Wasm plugin plugin
"""  # noqa: E501


def test_the_plugins_own_critical_line() -> None:
    assert envoy_log.plugin_messages(REFUSED) == ["invalid configuration: value: missing (required)"]
    assert envoy_log.plugin_messages(TRAPPED) == []
    with_root_id = "[t][1][error][wasm] [c.cc:1] wasm log p root vm: it broke\n"
    assert envoy_log.plugin_messages(with_root_id, ("error",)) == ["it broke"]


def test_vm_failures_leave_out_the_plugins_lines() -> None:
    assert envoy_log.vm_failures(TRAPPED) == [
        "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"
    ]
    assert envoy_log.vm_failures(REFUSED) == [
        "Wasm VM failed Failed to configure base Wasm plugin",
        "Plugin p failed to load",
    ]


def test_severe_lines_keep_the_cause_first_and_envoys_last_words() -> None:
    severe = envoy_log.severe(MISSING_IMPORT)
    assert severe[0] == "Failed to load Wasm module due to a missing import: env.proxy_no_such_call"
    assert severe[-1] == "Unable to create Wasm plugin plugin"
    assert "There is no configured limit" not in " ".join(envoy_log.severe(TRAPPED))
