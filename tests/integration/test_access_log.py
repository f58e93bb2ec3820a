"""Access log: one line per request, text (nginx combined + route/upstream/rt) or JSON, on stdout
or in --access-log-file; off means none."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .cfg import config, route, upstream
from .conftest import StartCore
from .coreproc import CoreProcess, poll
from .httpclient import request
from .upstreams import HttpUpstream, UpstreamSet

TEXT_LINE = re.compile(
    r"^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>HTTP/1\.[01])" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-) "
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" '
    r"route=(?P<route>\S+) upstream=(?P<upstream>\S+) rt=(?P<rt>[0-9]+(\.[0-9]+)?)$"
)


def start(
    upstreams: UpstreamSet, start_core: StartCore, *args: str
) -> tuple[CoreProcess, HttpUpstream]:
    echo = upstreams.http("echo")
    core = start_core(
        config([upstream("u", echo.address)], [route("app", "u", path="/app/")]), *args
    )
    return core, echo


def traffic(core: CoreProcess, marker: str) -> None:
    r = request(
        core.port,
        "GET",
        f"/app/{marker}-get?x=1",
        headers={"User-Agent": "itest-agent/1.0", "Referer": "http://ref.test/"},
    )
    assert r.status == 200
    assert request(core.port, "POST", f"/app/{marker}-post", body=b"b" * 10).status == 200
    assert request(core.port, "GET", f"/{marker}-missing").status == 404


def marked(text: str, marker: str) -> list[str]:
    return [line for line in text.splitlines() if marker in line]


def wait_lines(read: Callable[[], str], marker: str, n: int) -> list[str]:
    def enough() -> list[str] | None:
        lines = marked(read(), marker)
        return lines if len(lines) >= n else None

    return poll(
        enough,
        10,
        message=lambda: f"{n} access-log lines with {marker!r}; have:\n{read()[-2000:]}",
    )


@pytest.mark.parametrize("flags", [["--access-log", "text"], []], ids=["text", "default"])
def test_text_access_log(upstreams: UpstreamSet, start_core: StartCore, flags: list[str]) -> None:
    core, echo = start(upstreams, start_core, *flags)
    traffic(core, "tmark")
    lines = wait_lines(core.stdout_text, "tmark", 3)
    assert len(lines) == 3, lines
    parsed = []
    for line in lines:
        m = TEXT_LINE.match(line)
        assert m, f"access-log line does not match the combined+route format:\n{line!r}"
        parsed.append(m.groupdict())
    get, post, missing = parsed
    assert get["client"] == "127.0.0.1"
    assert get["method"] == "GET" and get["uri"] == "/app/tmark-get?x=1", get
    assert get["status"] == "200" and get["proto"] == "HTTP/1.1"
    assert get["ua"] == "itest-agent/1.0" and get["referer"] == "http://ref.test/"
    assert get["route"] == "app" and get["upstream"] == echo.address
    assert float(get["rt"]) < 5
    assert post["method"] == "POST" and post["status"] == "200"
    assert missing["status"] == "404" and missing["route"] != "app"


def test_json_access_log(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, echo = start(upstreams, start_core, "--access-log", "json")
    traffic(core, "jmark")
    lines = wait_lines(core.stdout_text, "jmark", 3)
    assert len(lines) == 3, lines
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"not one JSON object per line: {line!r}") from e
        missing = {
            "method",
            "path",
            "status",
            "route",
            "upstream",
            "duration",
            "bytes_sent",
            "client",
        } - set(rec)
        assert not missing, f"JSON access log lacks {missing}: {rec}"
        records.append(rec)
    get, post, nf = records
    assert get["method"] == "GET" and get["path"].startswith("/app/jmark-get"), get
    assert get["status"] == 200, get
    assert get["route"] == "app" and get["upstream"] == echo.address, get
    assert isinstance(get["duration"], int | float) and 0 <= get["duration"] < 5, get
    assert isinstance(get["bytes_sent"], int) and get["bytes_sent"] > 0, get
    assert "127.0.0.1" in str(get["client"]), get
    assert post["method"] == "POST" and post["status"] == 200, post
    assert nf["status"] == 404, nf


def test_access_log_off(upstreams: UpstreamSet, start_core: StartCore) -> None:
    core, _ = start(upstreams, start_core, "--access-log", "off")
    traffic(core, "omark")
    # nothing to poll for: watch a bounded window for any line
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        text = core.stdout_text() + core.stderr_text()
        assert not marked(text, "omark"), f"--access-log off still logged:\n{marked(text, 'omark')}"
        time.sleep(0.1)


def test_access_log_file(upstreams: UpstreamSet, start_core: StartCore, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    core, _ = start(upstreams, start_core, "--access-log", "json", "--access-log-file", str(log))
    traffic(core, "fmark")
    lines = wait_lines(lambda: log.read_text() if log.exists() else "", "fmark", 3)
    assert len(lines) == 3
    assert all(json.loads(line)["path"] for line in lines)
    assert not marked(core.stdout_text(), "fmark"), "with --access-log-file nothing goes to stdout"
