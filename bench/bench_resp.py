"""The RESP reply parser: a long array in TCP-sized pieces, and the per-message cost of a small reply.

Why: a 700 KB ``LRANGE`` reply was parsed from its start again at every read
(23 s in 1,448-byte pieces). The reader now resumes where it stopped, so the
time per byte must not grow with the reply's size. Printed, each as a ratio to
a baseline measured in the same run (figures vary with the machine, ratios less):

- an array of N one-byte bulk strings (N=100,000: 700 KB, ``LRANGE l 0 -1``) fed
  in 1,448-byte pieces, against N/2 and 2N: time per byte, as a ratio to N's
  (about 1.0 when linear) and to the baseline of just collecting the pieces; and N in
  pieces against N in one piece (about 1.0 when each read resumes);
- the same array through ``hiredis.Reader`` (the C parser redis-py uses), when importable;
- one small reply (``+OK``, a bulk string, a 2-element array) through
  ``RedisProfile.reply_end`` (what the message loop does when the reply is not
  the known one): µs per reply, and as a ratio to comparing the reply with the
  known one (the cheapest thing the loop does).

    python bench/bench_resp.py [--items 100000] [--piece 1448] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.profiles import RedisProfile, RespReader  # noqa: E402

SMALL = {"+OK": b"+OK\r\n", "bulk": b"$5\r\nhello\r\n", "array": b"*2\r\n$1\r\na\r\n:1\r\n"}


def array(items: int) -> bytes:
    """``*items`` of ``$1 x``: 7 bytes an item, as ``LRANGE`` of one-character values."""
    return b"*%d\r\n" % items + b"$1\r\nx\r\n" * items


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def best(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """CPU seconds of one call: the least of ``repeat`` runs (the least disturbed by the rest of a shared machine)."""
    return min(timeit.Timer(fn, timer=time.process_time).repeat(repeat=repeat, number=number)) / number


def feed_all(parts: list[bytes], limit: int) -> int:
    reader = RespReader(limit)
    end = 0
    for part in parts:
        end = reader.feed(part)
    return end


def collect(parts: list[bytes]) -> int:
    """The baseline: only gathering the pieces, as any reader must."""
    buffer = bytearray()
    for part in parts:
        buffer += part
    return len(buffer)


def hiredis_all(parts: list[bytes]) -> object:
    import hiredis

    reader = hiredis.Reader()
    reply: object = False
    for part in parts:
        reader.feed(part)
        reply = reader.gets()
    return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--piece", type=int, default=1448)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.items < 2 or args.piece < 1 or args.repeat < 1:
        parser.error("--items at least 2, --piece and --repeat at least 1")
    limit = 1 << 30
    per_byte: dict[int, float] = {}
    for items in (args.items // 2, args.items, args.items * 2):
        data = array(items)
        parts = pieces(data, args.piece)
        assert feed_all(parts, limit) == len(data)
        took = best(lambda: feed_all(parts, limit), args.repeat)
        base = best(lambda: collect(parts), args.repeat)
        per_byte[items] = took / len(data)
        print(f"array of {items:>7,} items ({len(data):>9,} bytes) in {len(parts):>5,} pieces of {args.piece}: "
              f"{took * 1e3:8.2f} ms, {took / base:6.1f}x collecting the pieces")  # fmt: skip
    for items, cost in per_byte.items():
        print(f"time per byte at {items:>7,} items / at {args.items:,}: {cost / per_byte[args.items]:.2f}x (linear: about 1)")
    data = array(args.items)
    parts = pieces(data, args.piece)
    whole = best(lambda: feed_all([data], limit), args.repeat)
    split = best(lambda: feed_all(parts, limit), args.repeat)
    print(f"{args.items:,} items in {len(parts):,} pieces / in one piece: {split / whole:.2f}x (resumed: about 1)")
    try:
        hiredis_all(parts)
    except ImportError:
        print("hiredis: not installed (pip install hiredis) - not compared")
    else:
        ours = best(lambda: feed_all(parts, limit), args.repeat)
        theirs = best(lambda: hiredis_all(parts), args.repeat)
        print(f"hiredis.Reader, {args.items:,} items: {theirs * 1e3:.2f} ms; RespReader / hiredis: {ours / theirs:.1f}x")
    profile = RedisProfile()
    number = 100_000
    known = b"+PONG\r\n"
    compare = best(lambda: SMALL["+OK"] == known, args.repeat, number)
    for name, reply in SMALL.items():
        assert profile.reply_end(reply) == len(reply)
        cost = best(lambda: profile.reply_end(reply), args.repeat, number)
        line = f"small reply {name:<6} reply_end: {cost * 1e6:.2f} us, {cost / compare:5.1f}x a compare with the known reply"
        try:
            import hiredis

            reader = hiredis.Reader()

            def hiredis_one() -> object:
                reader.feed(reply)
                return reader.gets()

            theirs = best(hiredis_one, args.repeat, number)
            line += f"; hiredis feed+gets {theirs * 1e6:.2f} us ({cost / theirs:.1f}x)"
        except ImportError:
            pass
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
