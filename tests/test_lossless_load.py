"""A burst of connections on ``wstrace serve`` with the collector down: every connection is
one whole trace in the file, and the collector's loss is counted, not the file's."""

from __future__ import annotations

import re
import signal

import pytest

from bench import burst

CONNECTIONS = 200
MESSAGES = 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_burst_of_connections_is_written_whole_while_the_collector_is_down(stop: int) -> None:
    report = burst.run(CONNECTIONS, waves=1, messages=MESSAGES, timeout=120, stop=stop)

    assert report.exit_status == 0
    (wave,) = report.waves
    assert wave.served == CONNECTIONS
    assert wave.whole == CONNECTIONS  # one ws.connection, every message and frame, close 1000
    file_line, collector_line = report.exit_summary
    assert file_line.startswith("file ")
    assert f" {report.spans_in_file} spans written, 0 dropped, 0 failed" in file_line
    assert collector_line.startswith("collector ")
    written, dropped, failed = (
        int(re.search(rf"(\d+) {what}", collector_line).group(1))  # type: ignore[union-attr]
        for what in ("spans written", "dropped", "failed")
    )
    assert written == 0 and dropped + failed == report.spans_in_file  # each one counted
