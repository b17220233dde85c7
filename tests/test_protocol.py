"""The protocol with no sockets: bytes in, events out (in the manner of h11's tests)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from server.base import Session, escape
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
    is_quit,
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


def test_escape_keeps_text_and_shows_control_characters() -> None:
    assert escape("Hello ZACK é") == "Hello ZACK é"
    assert escape("A\x1b[31MB\nFORGED\r\u2028") == "A\\x1b[31MB\\nFORGED\\r\\u2028"


def test_encode_message_refuses_what_the_server_would_split() -> None:
    assert encode_message("Zack") == b"Zack"
    with pytest.raises(ValueError, match="5120"):
        encode_message("a" * (MAX_MESSAGE + 1))


# -- properties (hypothesis): any bytes, any split ------------------------------------
CHUNK = st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode), st.just(b"--quit--"))
ANSWERED = (Message, Undecodable)
PROPERTY = settings(max_examples=200, deadline=None)  # deadline: a loaded CI machine is no bug


@PROPERTY
@given(max_message=st.integers(1, 16), chunks=st.lists(CHUNK, max_size=12))
def test_any_chunks_never_raise_and_each_piece_gets_exactly_one_outcome(max_message: int, chunks: list[bytes]) -> None:
    """Per read: one answered event (or Quit) per piece of at most max_message bytes; Oversized for full ones."""
    conn = ServerConnection(max_message)
    for chunk in chunks:
        closed_before = conn.closed
        events = conn.receive_data(chunk)
        assert all(isinstance(e, (Message, Quit, PeerClosed, Oversized, Undecodable)) for e in events)
        if closed_before:
            assert events == []  # nothing after Quit or PeerClosed
            continue
        if not chunk:
            assert events == [PeerClosed()] and conn.closed
            continue
        outcomes = [e for e in events if not isinstance(e, Oversized)]
        pieces = -(-len(chunk) // max_message)
        quits = [i for i, e in enumerate(outcomes) if isinstance(e, Quit)]
        if quits:
            assert quits == [len(outcomes) - 1] and conn.closed  # processing stops at the quit
            assert len(outcomes) <= pieces
        else:
            assert len(outcomes) == pieces and all(isinstance(e, ANSWERED) for e in outcomes)
        full = sum(1 for start in range(0, len(outcomes) * max_message, max_message) if len(chunk[start : start + max_message]) == max_message)
        assert sum(1 for e in events if isinstance(e, Oversized)) == full


@PROPERTY
@given(chunks=st.lists(CHUNK, max_size=12), tail=st.lists(CHUNK, max_size=4))
def test_nothing_after_quit_or_close(chunks: list[bytes], tail: list[bytes]) -> None:
    conn = ServerConnection()
    for chunk in chunks:
        conn.receive_data(chunk)
    conn.receive_data(b"")  # closed now, if it was not already
    assert conn.closed
    assert all(conn.receive_data(chunk) == [] for chunk in [*tail, b"", QUIT])


@PROPERTY
@given(text=st.text(min_size=1, max_size=200), max_message=st.integers(4, 32))
def test_utf8_cut_anywhere_by_full_reads_comes_back_whole(text: str, max_message: int) -> None:
    """Full-buffer reads may cut a character: it is carried over, never lost or undecodable."""
    assume(not is_quit(process(text)))
    data = text.encode()
    events = ServerConnection(max_message).receive_data(data)
    assert not any(isinstance(e, Undecodable) for e in events)
    assert "".join(e.text for e in events if isinstance(e, Message)) == text


@PROPERTY
@given(chunks=st.lists(CHUNK, max_size=12))
def test_session_replies_once_per_answered_event(chunks: list[bytes]) -> None:
    """Session.feed, the servers' one path to the protocol, counts exactly one reply per Message/Undecodable."""
    session, mirror = Session("127.0.0.1:1"), ServerConnection()
    for chunk in chunks:
        events = mirror.receive_data(chunk)
        replies, close = session.feed(chunk)
        assert replies == sum(1 for e in events if isinstance(e, ANSWERED))
        assert close == any(isinstance(e, (Quit, PeerClosed)) for e in events)
