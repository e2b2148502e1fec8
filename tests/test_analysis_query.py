"""The query view read from trace files alone: the committed samples of the demo's scripted
auction (five bidders, twenty bids, a chat message, a malformed message, an unknown auction)
on each WebSocket implementation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracer.analysis.query import TraceAssertionError, connections
from tracer.demo import SAMPLE_SCRIPT, SAMPLE_WS, sample_path
from tracer.export.reader import load

pytestmark = pytest.mark.fast  # reads committed trace files: no server, no subprocess

SAMPLES = Path(__file__).resolve().parents[1] / "traces" / "samples"


@pytest.fixture(params=SAMPLE_WS)
def views(request: pytest.FixtureRequest):
    return connections(load(sample_path(SAMPLES, request.param)))


def test_bidders_and_the_refused_request(views) -> None:
    *bidders, refused = views
    assert len(bidders) == SAMPLE_SCRIPT.clients
    refused.assert_handshake_refused(status=404)
    assert refused.close is None and refused.frames == []
    for bidder in bidders:
        bidder.assert_accepted().assert_closed(code=1000, initiator="client")
        assert bidder.handshake.accept_valid is True
        assert bidder.stack and bidder.stack[-1].function.endswith("send")


def test_every_bid_and_the_chat_reach_every_bidder(views) -> None:
    bidders = views[: SAMPLE_SCRIPT.clients]
    numbers = sorted(b.number for b in bidders)
    broadcasts = [broadcast for b in bidders for broadcast in b.broadcasts]
    assert len(broadcasts) == SAMPLE_SCRIPT.bids + 1  # the chat message is broadcast too
    for broadcast in broadcasts:
        assert broadcast.recipients == SAMPLE_SCRIPT.clients
        assert sorted(broadcast.recipient_numbers) == numbers
    for bidder in bidders:
        bidder.assert_broadcast_reached(SAMPLE_SCRIPT.clients)
        sent = [m for m in bidder.messages if m.direction == "send"]
        data_frames = [f for f in bidder.frames if f.direction == "send" and f.opcode in (1, 2)]
        assert len(data_frames) == len(sent) >= len(broadcasts) + 1  # + the room's state


def test_frames_are_masked_from_the_client_only(views) -> None:
    for conn in views:
        assert all(frame.mask == (frame.direction == "receive") for frame in conn.frames)


def test_a_failed_assertion_carries_the_connection_tree(views) -> None:
    with pytest.raises(TraceAssertionError) as failed:
        views.assert_no_frame_larger_than(0)
    message = str(failed.value)
    assert "frame(s) larger than 0 B" in message
    assert "ws.connection" in message and "└── ws.close" in message
    assert "\x1b" not in message
