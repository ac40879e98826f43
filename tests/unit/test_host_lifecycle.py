"""Lifecycle rules Envoy enforces: maps and buffers only in their callbacks, with Envoy's statuses."""

from __future__ import annotations

import pytest

from meshwasm.host import Action, LifecycleError, Plugin, Status


def test_writes_outside_the_callback_get_envoys_status(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"])
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"})
    stream.send_request_body(b"data")
    # Request headers continued, so Envoy no longer exposes them: BadArgument (2);
    # the response body does not exist yet, and Envoy reads it as empty: Ok (0), nothing copied.
    # (tests/integration/test_host_differential.py checks these statuses against Envoy.)
    assert [entry.message for entry in plugin.logs] == [
        "add request header in on_request_body: 2",
        "read response body in on_request_body: 0",
    ]
    assert "x-late" not in stream.request_headers
    assert [(v.call, v.status) for v in plugin.violations] == [
        ("proxy_add_header_map_value", Status.BAD_ARGUMENT),
        ("proxy_get_buffer_bytes", Status.OK),
    ]
    assert "on_request_body" in plugin.violations[0].why


def test_strict_mode_raises_on_the_first_misuse(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["faults"], strict=True)
    stream = plugin.http_stream()
    stream.send_request_headers({})
    with pytest.raises(LifecycleError, match="proxy_add_header_map_value returned BAD_ARGUMENT") as misuse:
        stream.send_request_body(b"data")
    assert misuse.value.call == "proxy_add_header_map_value"


def test_paused_headers_stay_writable_until_resumed(sdk_examples_wasm):
    """http_callout pauses the request; its callback resumes it after the callout answers."""
    plugin = Plugin.load(sdk_examples_wasm, root_id="http_callout", strict=True)
    stream = plugin.http_stream()
    request = {":method": "GET", ":path": "/status/200", ":authority": "example.com"}
    assert stream.send_request_headers(request, end_of_stream=True) == Action.PAUSE
    assert stream.request_paused
    (call,) = plugin.pending_http_calls
    call.respond(200, body=b"ok")
    assert not stream.request_paused
    assert stream.local_response is None
    assert plugin.pending_http_calls == []


def test_body_is_buffered_while_paused_and_forwarded_on_continue(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="body", strict=True)
    stream = plugin.http_stream()
    headers = {":method": "POST", ":path": "/", "content-length": "10", "buffer-operation": "append"}
    assert stream.send_request_headers(headers) == Action.CONTINUE
    assert stream.send_request_body(b"hello ", end_of_stream=False) == Action.PAUSE
    assert stream.request_body == b"hello "  # held, not yet sent upstream
    assert stream.send_request_body(b"world", end_of_stream=True) == Action.CONTINUE
    assert stream.request_body == b"hello world[this is appended body]"
    assert "original request body: hello world" in plugin.logs_at("info")


def test_on_log_may_read_headers_but_not_write_them(sdk_examples_wasm):
    plugin = Plugin.load(sdk_examples_wasm, root_id="headers")
    stream = plugin.http_stream()
    stream.send_request_headers({":path": "/"})
    stream.send_response_headers({":status": "200"})
    stream.complete()
    assert stream.done
    assert plugin.logs[-1].message == f"{stream.id} finished"
    with pytest.raises(Exception, match="complete"):
        stream.send_request_headers({})


def test_plugin_configuration_is_readable_only_in_on_configure(host_wat_modules):
    plugin = Plugin.load(host_wat_modules["command_malloc"], config="first")
    assert plugin.logs_at("info")[-1] == "first"
    assert plugin.configure("second")
    assert plugin.logs_at("info")[-1] == "second"
    from meshwasm.host.abi import BufferType

    assert plugin._buffer(BufferType.PLUGIN_CONFIGURATION) is None
