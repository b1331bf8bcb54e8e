"""The scanning engines' pure parts: clamd's replies, framing, and their settings."""

from __future__ import annotations

import pytest

from broker import config
from broker.adapters import scanners
from broker.domain.scanning import STREAM_TOO_LONG_SIGNATURE, ScannerUnavailable, ScanVerdict

from .test_config import GOOD, env  # noqa: F401  (the fixture, reused)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (b"stream: OK\0", ScanVerdict(False, None, "clamd")),
        (b"stream: OK", ScanVerdict(False, None, "clamd")),
        (
            b"stream: Win.Test.EICAR_HDB-1 FOUND\0",
            ScanVerdict(True, "Win.Test.EICAR_HDB-1", "clamd"),
        ),
        (
            b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0",
            ScanVerdict(True, "Heuristics.Limits.Exceeded.MaxFileSize", "clamd"),
        ),
        (b"stream: FOUND\0", ScanVerdict(True, None, "clamd")),  # unnamed, still not clean
        (
            b"INSTREAM size limit exceeded. ERROR\0",
            ScanVerdict(True, STREAM_TOO_LONG_SIGNATURE, "clamd"),
        ),
    ],
)
def test_parse_clamd_reply_verdicts(reply: bytes, verdict: ScanVerdict) -> None:
    assert scanners.parse_clamd_reply(reply) == verdict


def test_parse_clamd_reply_bounds_the_signature() -> None:
    verdict = scanners.parse_clamd_reply(b"stream: " + b"S" * 5000 + b" FOUND\0")
    assert verdict.infected
    assert verdict.signature == "S" * scanners.MAX_SIGNATURE_CHARS


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # clamd closed the connection without a word
        b"COMMAND READ TIMED OUT\0",
        b"Can't allocate memory ERROR\0",
        b"stream: lstat() failed: No such file ERROR\0",
        b"UNKNOWN COMMAND\0",
        b"PONG\0",
    ],
)
def test_parse_clamd_reply_anything_else_is_no_verdict(reply: bytes) -> None:
    with pytest.raises(ScannerUnavailable):
        scanners.parse_clamd_reply(reply)


def test_frames_cut_large_chunks_and_drop_empty_ones() -> None:
    # An empty frame would be the zero-length terminator and end the stream early.
    frames = list(scanners._frames([b"", b"abcdefg", b"", b"hi"], 3))
    assert frames == [b"abc", b"def", b"g", b"hi"]


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("unix:/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
        ("tcp:127.0.0.1:3310", ("127.0.0.1", 3310)),
        ("tcp:clamd.internal:3310", ("clamd.internal", 3310)),
        ("tcp:[::1]:3310", ("::1", 3310)),
    ],
)
def test_parse_clamd_address(address: str, target: object) -> None:
    assert config.parse_clamd_address(address) == target


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BROKER_CLAMD_ADDRESS", "/run/clamav/clamd.ctl", "BROKER_CLAMD_ADDRESS"),
        ("BROKER_CLAMD_ADDRESS", "unix:relative.ctl", "BROKER_CLAMD_ADDRESS"),
        ("BROKER_CLAMD_ADDRESS", "tcp:127.0.0.1", "BROKER_CLAMD_ADDRESS"),
        ("BROKER_CLAMD_ADDRESS", "tcp:127.0.0.1:70000", "BROKER_CLAMD_ADDRESS"),
        ("BROKER_SCAN_COMMAND", "scan 'unclosed", "BROKER_SCAN_COMMAND"),
        ("BROKER_SCAN_TIMEOUT_SECONDS", "0", "BROKER_SCAN_TIMEOUT_SECONDS"),
    ],
)
def test_invalid_scanner_setting_is_named(env, name, value, message):  # noqa: F811
    env.setenv(name, value)
    with pytest.raises(config.ConfigError) as raised:
        config.load_settings()
    assert message in str(raised.value)


def test_clamd_and_command_are_exclusive(env):  # noqa: F811
    env.setenv("BROKER_CLAMD_ADDRESS", "tcp:127.0.0.1:3310")
    env.setenv("BROKER_SCAN_COMMAND", "clamdscan -")
    with pytest.raises(config.ConfigError) as raised:
        config.load_settings()
    assert "BROKER_CLAMD_ADDRESS and BROKER_SCAN_COMMAND" in str(raised.value)


def test_scanner_from_settings(env):  # noqa: F811
    assert scanners.scanner_from_settings(config.load_settings()) is None
    assert config.load_settings().scan_timeout_seconds == 60

    env.setenv("BROKER_CLAMD_ADDRESS", " unix:/run/clamav/clamd.ctl ")
    env.setenv("BROKER_SCAN_TIMEOUT_SECONDS", "5")
    clamd = scanners.scanner_from_settings(config.load_settings())
    assert isinstance(clamd, scanners.ClamdScanner)
    assert (clamd.name, clamd.target, clamd.timeout_seconds) == (
        "clamd",
        "/run/clamav/clamd.ctl",
        5,
    )

    env.delenv("BROKER_CLAMD_ADDRESS")
    env.setenv("BROKER_SCAN_COMMAND", "/opt/av/scan --profile 'strict mode' -")
    command = scanners.scanner_from_settings(config.load_settings())
    assert isinstance(command, scanners.CommandScanner)
    assert command.argv == ["/opt/av/scan", "--profile", "strict mode", "-"]
    assert command.name == "command:scan"
