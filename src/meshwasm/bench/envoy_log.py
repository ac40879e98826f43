"""What Envoy's log says went wrong with a plugin or with Envoy itself (pure).

Envoy's default log format::

    [2026-11-29 21:33:38.196][31928][critical][wasm] [source/.../context.cc:1160] wasm log p: bad value

A plugin's own log calls come out under the ``wasm`` logger as ``wasm log <plugin>[ <root_id>]:
<message>``; a VM fault as ``Function: proxy_on_request_headers failed: Uncaught RuntimeError:
unreachable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(
    r"^\[[^\]]*\]\[\d+\]\[(?P<level>\w+)\]\[(?P<logger>[\w.-]+)\] \[(?P<source>[^\]]*)\] (?P<message>.*)$"
)
_PLUGIN_LOG = re.compile(r"^wasm log(?: [^:]*)?: (?P<message>.*)$")
_SEVERE = ("critical", "error")


@dataclass(frozen=True)
class LogLine:
    level: str
    logger: str
    message: str


def parse(text: str) -> list[LogLine]:
    """The lines in Envoy's format; anything else (its final stderr line, a crash trace) is kept
    as a line of logger ``-`` and level ``other``."""
    lines = []
    for raw in text.splitlines():
        found = _LINE.match(raw)
        if found:
            lines.append(LogLine(found["level"], found["logger"], found["message"]))
        elif raw.strip():
            lines.append(LogLine("other", "-", raw.strip()))
    return lines


def plugin_messages(text: str, levels: tuple[str, ...] = ("critical",)) -> list[str]:
    """What the plugin itself logged at ``levels`` (its refusal of a config is one such line)."""
    out = []
    for line in parse(text):
        if line.logger == "wasm" and line.level in levels:
            found = _PLUGIN_LOG.match(line.message)
            if found:
                out.append(found["message"])
    return out


def vm_failures(text: str) -> list[str]:
    """Envoy's own error lines about the Wasm VM (a trap in a callback, a failed VM), without the
    plugin's log lines."""
    return [
        line.message
        for line in parse(text)
        if line.logger == "wasm" and line.level in _SEVERE and not _PLUGIN_LOG.match(line.message)
    ]


def severe(text: str) -> list[str]:
    """Every critical or error line, and the unformatted lines Envoy prints as it gives up."""
    return [line.message for line in parse(text) if line.level in (*_SEVERE, "other")]
