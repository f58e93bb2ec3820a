"""One access-log line per request, text (nginx combined + extras) or JSON.

Lines are buffered and flushed in batches (every 64 lines or 0.5 s) so that a
busy router does not pay a write(2) per request.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clf_time(now: float) -> str:
    t = time.localtime(now)
    off = t.tm_gmtoff // 60
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"
    )


def _quote(value: str) -> str:
    # Client-controlled text must not be able to forge log lines.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


class AccessLog:
    def __init__(self, fmt: str, path: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.json = fmt == "json"
        self._stream: TextIO = (
            open(path, "a", encoding="utf-8", buffering=1024 * 64)  # noqa: SIM115
            if path
            else sys.stdout
        )
        self._own = path is not None
        self._lines: list[str] = []
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None

    def log(
        self,
        *,
        client: str,
        method: str,
        target: str,
        version: str,
        status: int,
        bytes_sent: int,
        bytes_received: int,
        referer: str,
        user_agent: str,
        route: str,
        upstream: str,
        duration: float,
    ) -> None:
        now = time.time()
        if self.json:
            line = json.dumps(
                {
                    "time": now,
                    "client": client,
                    "method": method,
                    "path": target,
                    "version": version,
                    "status": status,
                    "bytes_sent": bytes_sent,
                    "bytes_received": bytes_received,
                    "referer": referer,
                    "user_agent": user_agent,
                    "route": route,
                    "upstream": upstream,
                    "duration": round(duration, 6),
                },
                separators=(",", ":"),
            )
        else:
            line = (
                f'{client} - - [{_clf_time(now)}] "{_quote(method)} {_quote(target)} HTTP/{version}" '
                f'{status} {bytes_sent} "{_quote(referer) or "-"}" "{_quote(user_agent) or "-"}" '
                f"route={route or '-'} upstream={upstream or '-'} rt={duration:.3f}"
            )
        self._lines.append(line)
        if len(self._lines) >= 64:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(0.5, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            try:
                self._stream.write("\n".join(self._lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed or full log must never take the proxy down
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._stream.close()
