"""Hostile servers and careless targets (issue 22, items 1, 3, 4 and 9), with bytes alone: no sockets.

The readers of :mod:`harness.profiles` (bytes in, the reply's end out), the one reply limit,
bounded failure texts, and target parsing. tests/test_hostile_servers.py runs the hostile
servers themselves under Locust.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import arguments, cli, probe, readers, target
from harness.failures import SAMPLE_CHARS, SAMPLES_PER_CLASS, ReplyTooLarge, ServerError, UnexpectedReply, bounded
from harness.profiles import MAX_REPLY, LineProfile, Profile, RedisProfile, RespReader, TooLarge, max_reply_bytes

REPLIES = [
    b"+OK\r\n", b"-ERR wrong\r\n", b":42\r\n", b":-1\r\n", b"$5\r\nhello\r\n", b"$0\r\n\r\n", b"$-1\r\n", b"*-1\r\n",
    b"*0\r\n", b"*2\r\n$1\r\na\r\n:1\r\n", b"*2\r\n*1\r\n+x\r\n*2\r\n$-1\r\n-ERR e\r\n", b"$4\r\na\r\nb\r\n",
    b"+" + b"long simple string " * 10 + b"\r\n", b"*3\r\n*0\r\n*1\r\n*1\r\n:7\r\n$2\r\nab\r\n",
]  # fmt: skip
JUNK = [b"?what\r\n", b":12x\r\n", b"$3\r\nabcd\r\n", b"$-2\r\n", b"*-3\r\n", b"$ 3\r\nabc\r\n", b"*1\r\n?\r\n"]


def feed(reader: Any, pieces: list[bytes]) -> int:
    """Feed ``pieces`` in turn; the first non-zero end (the reply is whole), else 0."""
    for piece in pieces:
        end = reader.feed(piece)
        if end:
            return end
    return 0


def splits(data: bytes) -> Iterator[list[bytes]]:
    """``data`` as two reads cut at every byte boundary, then one byte a read."""
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]
    yield [data[i : i + 1] for i in range(len(data))]


# -- the readers: bytes in, the reply's end out ------------------------------------------------------


@pytest.mark.parametrize("reply", REPLIES)
def test_resp_reader_finds_the_end_in_any_split(reply: bytes) -> None:
    for pieces in splits(reply):
        assert feed(RedisProfile().reader(), pieces) == len(reply), pieces
        assert feed(RedisProfile().reader(), pieces + [b"+next\r\n"]) == len(reply), pieces
    for pieces in splits(reply[:-1]):  # one byte short: not yet
        assert feed(RedisProfile().reader(), pieces) == 0, pieces


@pytest.mark.parametrize("junk", JUNK)
def test_resp_reader_refuses_what_is_not_resp_in_any_split(junk: bytes) -> None:
    for pieces in splits(junk):
        with pytest.raises(ValueError):
            feed(RedisProfile().reader(), pieces)


def test_line_and_custom_readers_find_the_end_in_any_split() -> None:
    class Prefixed(Profile):
        """A custom framing with only reply_end: the default reader asks it of all bytes so far."""

        def reply_end(self, buffer: bytes) -> int:
            end = 1 + buffer[0] if buffer else 0
            return end if len(buffer) >= end else 0

    for profile, reply in ((LineProfile(), b"a line\n"), (Prefixed(), b"\x05hello")):
        for pieces in splits(reply):
            assert feed(profile.reader(), pieces + [b"more\n"]) == len(reply), (profile, pieces)


class CountingBuffer(bytearray):
    """A reader's buffer that counts the bytes its searches, comparisons and slices look at."""

    looked = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        at = super().find(sub, start, end)
        CountingBuffer.looked += (at + len(sub) if at >= 0 else len(self)) - (start or 0)
        return at

    def startswith(self, prefix: Any, start: Any = None, end: Any = None) -> bool:  # type: ignore[override]
        CountingBuffer.looked += len(prefix)
        return super().startswith(prefix, start, end)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            CountingBuffer.looked += len(range(*key.indices(len(self))))
        return super().__getitem__(key)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[CountingBuffer]:
    """Count the RESP reader's work: its buffer's searches and slices, and each line its pattern matches."""
    pattern = readers.RESP_HEAD

    class Head:
        def match(self, buffer: Any, pos: int = 0) -> Any:
            found = pattern.match(buffer, pos)
            CountingBuffer.looked += (found.end() if found else min(len(buffer), pos + 80)) - pos
            return found

    monkeypatch.setattr(readers, "RESP_HEAD", Head())
    CountingBuffer.looked = 0
    return CountingBuffer


@pytest.mark.parametrize("reply", [
    b"*100000\r\n" + b"$1\r\nx\r\n" * 100_000,  # LRANGE of 100,000 one-character values: 700 KB
    b"*250000\r\n" + b":1\r\n" * 250_000,  # the hostile server's reply, had it ended
    b"+" + b"a" * 700_000 + b"\r\n",  # one long line
])  # fmt: skip
def test_a_long_reply_in_tcp_sized_pieces_costs_each_byte_a_bounded_number_of_looks(
    counted: type[CountingBuffer], reply: bytes
) -> None:
    """Resumed, not re-parsed from the start at each read (23 s for 700 KB): work counted, not timed."""
    reader = RespReader(limit=1 << 30)
    pieces = [reply[i : i + 1448] for i in range(0, len(reply), 1448)]
    assert feed(reader, [counted(pieces[0]), *pieces[1:]]) == len(reply)
    assert counted.looked <= 3 * len(reply), (counted.looked, len(reply))


# -- one limit on a reply, said as what it is -------------------------------------------------------


def test_a_valid_2_mb_bulk_reply_is_read_whole_under_the_default_limit() -> None:
    """It was refused by a 1 MB cap, as "no whole redis reply", while the parser allowed 512 MB."""
    reply = b"$2000000\r\n" + b"v" * 2_000_000 + b"\r\n"
    assert MAX_REPLY >= 2 * 1024 * 1024
    pieces = [reply[i : i + 65536] for i in range(0, len(reply), 65536)]
    assert feed(RedisProfile().reader(), pieces) == len(reply)


@pytest.mark.parametrize(("profile", "pieces"), [
    (RedisProfile(), [b"$2000000\r\n"]),  # known too large from its header: refused before its bytes come
    (RedisProfile(), [b"*100\r\n", b":1\r\n" * 100]),  # an array that grows past the limit
    (RedisProfile(), [b"+" + b"a" * 200, b"a" * 200]),  # a line without its end
    (LineProfile(), [b"x" * 300, b"x" * 300]),
    (LineProfile(), [b"x" * 300 + b"\n"]),  # whole, but longer than the limit
])  # fmt: skip
def test_a_reply_over_the_limit_is_too_large_whatever_its_size(profile: Profile, pieces: list[bytes]) -> None:
    profile.max_reply = 256
    with pytest.raises(TooLarge) as caught:
        feed(profile.reader(), pieces)
    assert str(caught.value) == "reply larger than --max-reply-bytes 256"  # no size of its own: one row per limit
    failure = ReplyTooLarge(str(caught.value))
    assert isinstance(failure, UnexpectedReply) and failure.fatal


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5", "", str((1 << 30) + 1)])
def test_max_reply_bytes_refuses_bad_values_in_one_line(value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--max-reply-bytes must be") as caught:
        max_reply_bytes(value)
    assert "\n" not in str(caught.value)
    code = cli.main(["sweep", f"--locust-arg=--max-reply-bytes={value}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--max-reply-bytes must be" in err[0], err
    assert not (tmp_path / "r").exists()
    assert max_reply_bytes("1048576") == 1 << 20
    arguments.locust_args_ok(["--max-reply-bytes", "4096"])


# -- server-chosen texts: a bounded set of failure rows ---------------------------------------------


def test_failure_texts_are_a_bounded_sample_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.failures._samples", {})
    rng = random.Random(22)
    texts = [f"ERR {rng.getrandbits(128):x} " + "x" * rng.randrange(300) for _ in range(30_000)]
    reported = {str(bounded(ServerError(text))) for text in texts}
    assert len(reported) == SAMPLES_PER_CLASS + 1, len(reported)  # the first distinct ones, then the class's own
    assert all(len(text) <= SAMPLE_CHARS + 3 for text in reported)
    assert texts[0][:SAMPLE_CHARS] in {t.rstrip(".") for t in reported}
    assert str(bounded(ServerError(texts[0]))).startswith(texts[0][:SAMPLE_CHARS])  # a kept text stays its own
    others = {str(bounded(UnexpectedReply(f"junk {i}"))) for i in range(100)}  # each class has its own sample
    assert len(others) == SAMPLES_PER_CLASS + 1


# -- targets: only the four-part dotted form is an IPv4 address ----------------------------------------


# (loopback-looking on purpose: a test names no address outside loopback, even one it never reaches)
MALFORMED = ["1.2.3:9", "tcp://127.1:80", "2130706433:80", "0x7f.1:80", "0127.0.0.1:80", "127.0.0.1.5:80",
             "127.0.0.256:80", "127.0.0.1.:80", "host.123:80"]  # fmt: skip


def _no_lookups(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every name lookup and connect the harness would make (and make none)."""
    asked: list[Any] = []

    def resolve(host: str, port: int) -> list:
        asked.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, "not looked up in this test")

    def connect(*args: Any) -> socket.socket:
        asked.append(args)
        raise ConnectionRefusedError("no connect in this test")

    monkeypatch.setattr(target, "resolve", resolve)
    monkeypatch.setattr(probe, "connect", connect)
    return asked


@pytest.mark.parametrize("host", MALFORMED)
def test_only_the_four_part_dotted_form_is_an_ipv4_address(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest is refused in one line, never looked up (the C library would read it as another address)."""
    asked = _no_lookups(monkeypatch)
    for parse in (target.split_host, target.parse_host):
        with pytest.raises(ValueError, match="is no IPv4 address") as caught:
            parse(host)
        assert "\n" not in str(caught.value)
    assert target.parse_host("127.2.3.4:9") == (socket.AF_INET, ("127.2.3.4", 9))
    assert target.split_host("db-1.example:6379") == ("db-1.example", 6379)
    assert target.split_host("[::1]:80") == ("::1", 80)
    assert asked == []


def test_sweep_refuses_a_malformed_dotted_target_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """1.2.3:9 was 1.2.0.3: a mistyped address loaded another host. Now one line, exit 2, no traffic."""
    asked = _no_lookups(monkeypatch)
    code = cli.main(["sweep", "--target", "1.2.3:9", "--users", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'1.2.3' is no IPv4 address" in err[0], err
    assert asked == [] and not (tmp_path / "r").exists()


def test_a_name_with_several_addresses_keeps_them_for_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    v6, v4 = (socket.AF_INET6, ("::1", 7)), (socket.AF_INET, ("127.0.0.1", 7))
    monkeypatch.setattr(target, "resolve", lambda host, port: [v6, v4, v4])  # getaddrinfo repeats itself
    monkeypatch.setattr(target, "_siblings", {})
    monkeypatch.setattr(target, "_worked", {})
    assert target.parse_host("dual.test:7") == v6
    assert target.alternatives(("::1", 7)) == (v4,) and target.alternatives(("127.0.0.1", 7)) == (v6,)
    assert target.alternatives(("127.0.0.9", 7)) == ()
    target.connected_to(*v4)
    assert target.parse_host("dual.test:7") == v4  # later users start where a connect succeeded
