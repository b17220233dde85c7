"""The scenario's own command-line options, added to Locust's parser (and its web UI).

Read back with :func:`scenario_options`, which validates them: a bad value is a
one-line ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.profiles import MAX_REPLY, PROFILES, Profile, max_reply_bytes
from harness.user.source_addresses import MAX_ADDRESSES
from harness.user.tls import settings as tls_settings
from server.protocol import MAX_MESSAGE

DEFAULT_HOST = "tcp://127.0.0.1:8000"
DEFAULT_MESSAGES_PER_SESSION = 10
DEFAULT_MESSAGE_SIZE = 12
#: Past the SYN resends of a full listen queue (1, 3, 7, 15, 31 s): a slow connect is a measurement.
DEFAULT_CONNECT_TIMEOUT = 35.0
_TEXT = b"Hello, world! "


@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    """The scenario's own options, read from Locust's parsed options."""

    messages_per_session: int = DEFAULT_MESSAGES_PER_SESSION
    message_size: int = DEFAULT_MESSAGE_SIZE
    think_time: float = 0.0
    rate: float = 0.0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    source_addresses: int = 0  # 0: as many as the user count needs (harness.user.source_addresses.auto_count)
    protocol: str = "chat"
    message: str = ""  # empty: the profile's default (chat/line: ``payload``; redis: PING)
    quit_message: str = ""
    tls: bool = False
    tls_ca: str = ""
    tls_insecure: bool = False
    max_reply_bytes: int = MAX_REPLY

    @property
    def payload(self) -> bytes:
        """Short text like the tutorial's client sends, ``message_size`` bytes long."""
        return (_TEXT * (self.message_size // len(_TEXT) + 1))[: self.message_size]

    def profile(self, cls: type[Profile] | None = None) -> tuple[Profile, bytes]:
        """The profile (``cls``, else ``--protocol``'s) and the bytes of its message; one-line ``ValueError``."""
        profile = (cls or PROFILES[self.protocol])(quit_message=self.quit_message)
        profile.max_reply = self.max_reply_bytes
        return profile, profile.encode(self.message or profile.default_message(self.payload.decode()))


def scenario_options(parsed: Any) -> ScenarioOptions:
    """Validate and return the options; a one-line ``ValueError`` when one is wrong."""
    if parsed is None:
        return ScenarioOptions()
    opts = ScenarioOptions(
        messages_per_session=int(getattr(parsed, "messages_per_session", DEFAULT_MESSAGES_PER_SESSION)),
        message_size=int(getattr(parsed, "message_size", DEFAULT_MESSAGE_SIZE)),
        think_time=float(getattr(parsed, "think_time", 0.0) or 0.0),
        rate=float(getattr(parsed, "rate", 0.0) or 0.0),
        connect_timeout=float(getattr(parsed, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        source_addresses=int(getattr(parsed, "source_addresses", 0) or 0),
        protocol=str(getattr(parsed, "protocol", "chat") or "chat"),
        message=str(getattr(parsed, "message", "") or ""),
        quit_message=str(getattr(parsed, "quit_message", "") or ""),
        tls=bool(getattr(parsed, "tls", False)),
        tls_ca=str(getattr(parsed, "tls_ca", "") or ""),
        tls_insecure=bool(getattr(parsed, "tls_insecure", False)),
        max_reply_bytes=max_reply_bytes(getattr(parsed, "max_reply_bytes", MAX_REPLY)),
    )
    if opts.messages_per_session < 1:
        raise ValueError(f"--messages-per-session must be at least 1 (got {opts.messages_per_session})")
    if not 1 <= opts.message_size <= MAX_MESSAGE:
        raise ValueError(
            f"--message-size must be 1..{MAX_MESSAGE} bytes (got {opts.message_size}): "
            "the protocol has no framing and the server reads recv(5120)"
        )
    if opts.think_time < 0 or not math.isfinite(opts.think_time):
        raise ValueError(f"--think-time must be a number of seconds >= 0 (got {opts.think_time})")
    if opts.rate < 0 or not math.isfinite(opts.rate):
        raise ValueError(f"--rate must be messages per second >= 0 (got {opts.rate})")
    if not 0 < opts.connect_timeout < 3600:
        raise ValueError(f"--connect-timeout must be seconds in (0, 3600) (got {opts.connect_timeout})")
    if not 0 <= opts.source_addresses <= MAX_ADDRESSES:
        raise ValueError(f"--source-addresses must be 0 (automatic) or 1..{MAX_ADDRESSES} (got {opts.source_addresses})")
    if opts.rate and opts.think_time:
        raise ValueError("--rate and --think-time exclude each other: the rate sets the pace")
    if opts.protocol not in PROFILES:
        raise ValueError(f"--protocol {opts.protocol!r}: one of {', '.join(sorted(PROFILES))}")
    if opts.quit_message and opts.protocol != "line":
        raise ValueError("--quit-message is the line profile's (--protocol line)")
    if (opts.tls_ca or opts.tls_insecure) and not opts.tls:
        raise ValueError("--tls-ca and --tls-insecure need --tls")
    if opts.tls_ca and opts.tls_insecure:
        raise ValueError("--tls-ca and --tls-insecure exclude each other: insecure checks no CA")
    opts.profile()  # a --message the profile cannot encode: its one-line ValueError
    if opts.tls:
        tls_settings("", opts.tls_ca, opts.tls_insecure)  # an unreadable CA file: one line
    return opts


def add_arguments(parser: Any, **_kw: Any) -> None:
    """Locust's ``init_command_line_parser`` listener: the scenario options."""
    # parser.add_argument (not a group's): only Locust's own add_argument marks options for the web UI
    add = parser.add_argument
    add("--messages-per-session", type=int, default=DEFAULT_MESSAGES_PER_SESSION, include_in_web_ui=True,
        env_var="SWARMBENCH_MESSAGES_PER_SESSION", help="messages per connection before --quit-- (default 10)")
    add("--message-size", type=int, default=DEFAULT_MESSAGE_SIZE, include_in_web_ui=True,
        env_var="SWARMBENCH_MESSAGE_SIZE",
        help=f"bytes per message, 1..{MAX_MESSAGE} (default 12: short text like the tutorial's)")
    add("--think-time", type=float, default=0.0, include_in_web_ui=True, env_var="SWARMBENCH_THINK_TIME",
        help="seconds between a reply and the next message (default 0)")
    add("--rate", type=float, default=0.0, include_in_web_ui=True, env_var="SWARMBENCH_RATE",
        help="open loop: messages per second over all users, latency measured from the intended "
             "send time (default 0: closed loop)")
    add("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT, include_in_web_ui=True,
        env_var="SWARMBENCH_CONNECT_TIMEOUT",
        help="seconds before a connect counts as failed (default 35: SYNs a full listen queue dropped "
             "are resent after 1, 3, 7, 15 and 31 s; those slow connects are measurements)")
    add("--source-addresses", type=int, default=0, include_in_web_ui=True, env_var="SWARMBENCH_SOURCE_ADDRESSES",
        help="source addresses 127.0.0.1, 127.0.0.2, ... for an IPv4 loopback target (default 0: "
             "as many as the users need, one per ~14k connections, more if ports run out)")
    add("--protocol", type=str, default="chat", choices=sorted(PROFILES), include_in_web_ui=True,
        env_var="SWARMBENCH_PROTOCOL", help="the server's protocol: chat (reply '-'), line (one line each way), "
                                            "redis (RESP commands); default chat")
    add("--message", type=str, default="", include_in_web_ui=True, env_var="SWARMBENCH_MESSAGE",
        help="the message each request sends, e.g. 'SET k v' for redis (default: --message-size bytes of "
             "text for chat and line, PING for redis)")
    add("--quit-message", type=str, default="", include_in_web_ui=True, env_var="SWARMBENCH_QUIT_MESSAGE",
        help="line: the session's last line; the server then closes (default empty: just close)")
    add("--tls", action="store_true", default=False, include_in_web_ui=True, env_var="SWARMBENCH_TLS",
        help="TLS after connect (stdlib ssl; SNI and certificate check against --host's name); "
             "the handshake is timed as 'tls_handshake'")
    add("--tls-ca", type=str, default="", include_in_web_ui=True, env_var="SWARMBENCH_TLS_CA",
        help="CA certificate file (PEM) the server's certificate must chain to (default: the system's CAs)")
    add("--tls-insecure", action="store_true", default=False, include_in_web_ui=True,
        env_var="SWARMBENCH_TLS_INSECURE", help="do NOT verify the server's certificate (warned about)")
    add("--max-reply-bytes", type=str, default=str(MAX_REPLY), include_in_web_ui=True,
        env_var="SWARMBENCH_MAX_REPLY_BYTES",
        help=f"the largest reply accepted, in bytes (default {MAX_REPLY}: 8 MiB); a longer one fails as "
             "ReplyTooLarge. Each user may hold this much of a reply")
    add("--hdr-file", type=str, default="", include_in_web_ui=True, env_var="SWARMBENCH_HDR_FILE",
        help="write µs histograms here (JSON), with one .hgrm per request name next to it")  # fmt: skip
