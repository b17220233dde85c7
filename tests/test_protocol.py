"""The protocol with no sockets: bytes in, events out (in the manner of h11's tests)."""

from __future__ import annotations

import pytest

from server.protocol import (
    MAX_MESSAGE,
    QUIT,
    REPLY,
    Message,
    Oversized,
    PeerClosed,
    Quit,
    ReplyCounter,
    ServerConnection,
    Undecodable,
    encode_message,
    process,
)


def feed(*chunks: bytes) -> list:
    conn = ServerConnection()
    events = []
    for chunk in chunks:
        events.extend(conn.receive_data(chunk))
    return events


def test_one_message_is_processed_as_the_tutorial_does() -> None:
    assert feed(b"Zack") == [Message("Zack", "Hello ZACK")]
    assert feed(b"world!\r\n") == [Message("world!\r\n", "Hello WORLD!")]
    assert process("  python  \n") == "Hello   PYTHON"


def test_split_input_is_two_messages_one_recv_one_message() -> None:
    assert feed(b"Hel", b"lo") == [Message("Hel", "Hello HEL"), Message("lo", "Hello LO")]


def test_merged_input_is_one_message() -> None:
    assert feed(b"Zack" + b"Python") == [Message("ZackPython", "Hello ZACKPYTHON")]


@pytest.mark.parametrize("data", [QUIT, b"--QUIT--", b"--Quit--", b"bye --quit--\n", b"Zack--quit--"])
def test_quit_in_any_case_and_position_ends_the_session(data: bytes) -> None:
    conn = ServerConnection()
    events = conn.receive_data(data)
    assert len(events) == 1 and isinstance(events[0], Quit)
    assert conn.closed
    assert conn.receive_data(b"more") == []  # nothing after quit


def test_quit_after_messages_in_separate_chunks() -> None:
    events = feed(b"Python", QUIT)
    assert events[0] == Message("Python", "Hello PYTHON")
    assert isinstance(events[1], Quit)


def test_empty_read_is_peer_closed_once() -> None:
    conn = ServerConnection()
    assert conn.receive_data(b"") == [PeerClosed()]
    assert conn.receive_data(b"") == []


def test_invalid_utf8_is_an_event_not_an_exception_and_the_connection_goes_on() -> None:
    conn = ServerConnection()
    events = conn.receive_data(b"\xff\xfe bad")
    assert len(events) == 1 and isinstance(events[0], Undecodable)
    assert events[0].size == 6
    assert conn.receive_data(b"good") == [Message("good", "Hello GOOD")]


def test_utf8_character_cut_at_the_buffer_edge_is_carried_over() -> None:
    data = b"a" * (MAX_MESSAGE - 1) + "é".encode()  # the 5120 cut falls inside "é"
    events = feed(data[:MAX_MESSAGE], data[MAX_MESSAGE:])
    assert [e.__class__ for e in events] == [Oversized, Message, Message]
    assert events[1].text == "a" * (MAX_MESSAGE - 1) and events[2].text == "é"


def test_a_short_message_ending_mid_character_does_not_poison_the_next() -> None:
    conn = ServerConnection()
    assert isinstance(conn.receive_data(b"abc\xe2")[0], Undecodable)  # a whole message, not UTF-8
    assert conn.receive_data(b"hello") == [Message("hello", "Hello HELLO")]


def test_more_than_5120_bytes_is_cut_as_recv_5120_would_and_flagged() -> None:
    data = b"a" * (2 * MAX_MESSAGE + 100)
    events = feed(data)
    kinds = [e.__class__ for e in events]
    assert kinds == [Oversized, Message, Oversized, Message, Message]
    assert events[0] == Oversized(MAX_MESSAGE, MAX_MESSAGE)
    assert len(events[-1].text) == 100
    assert sum(1 for e in events if isinstance(e, Message)) == 3  # three replies, as recv(5120) x3


def test_oversized_multibyte_text_cut_mid_character_does_not_fail() -> None:
    data = b"a" + ("é" * 6000).encode()  # 12001 bytes: both 5120 cuts fall inside an "é"
    events = feed(data)
    assert not any(isinstance(e, Undecodable) for e in events)
    assert [e.__class__ for e in events] == [Oversized, Message, Oversized, Message, Message]
    assert "".join(e.text for e in events if isinstance(e, Message)) == "a" + "é" * 6000


def test_quit_inside_oversized_data_stops_processing() -> None:
    data = b"x" * MAX_MESSAGE + b"--quit--" + b"y" * MAX_MESSAGE
    events = feed(data)
    assert isinstance(events[-1], Quit)


def test_byte_at_a_time_is_one_message_per_byte() -> None:
    events = feed(*[bytes([b]) for b in b"abc"])
    assert [e.text for e in events] == ["a", "b", "c"]


def test_client_side_counts_replies_and_spots_anything_else() -> None:
    counter = ReplyCounter()
    assert counter.receive_data(REPLY) == 1
    assert counter.receive_data(REPLY * 3) == 3
    assert counter.receive_data(b"-x") == 1
    assert counter.replies == 5 and counter.unexpected == b"x"


def test_encode_message_refuses_what_the_server_would_split() -> None:
    assert encode_message("Zack") == b"Zack"
    with pytest.raises(ValueError, match="5120"):
        encode_message("a" * (MAX_MESSAGE + 1))
