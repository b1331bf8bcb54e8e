"""The scanning engines against a real clamd (Debian's, on the test signature) and real
commands: verdicts, streaming, limits, and every way of getting no verdict."""

from __future__ import annotations

import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.adapters import scanners
from broker.dev import clamd
from broker.domain.scanning import STREAM_TOO_LONG_SIGNATURE, ScannerUnavailable, ScanVerdict
from tests import clamd as clamd_control

MIB = 1024 * 1024


@pytest.fixture(params=["unix", "tcp"])
def scanner(
    request: pytest.FixtureRequest, clamd_address: str, clamd_service
) -> scanners.ClamdScanner:
    address = clamd_address if request.param == "unix" else clamd_service.tcp_address
    return scanners.ClamdScanner(address, timeout_seconds=30)


def test_clamd_finds_the_test_signature(scanner: scanners.ClamdScanner) -> None:
    verdict = scanner.scan([b"some text before ", clamd.EICAR, b" and after"])
    assert verdict == ScanVerdict(infected=True, signature=clamd.TEST_SIGNATURE, engine="clamd")


def test_clamd_finds_it_across_chunk_boundaries(scanner: scanners.ClamdScanner) -> None:
    pieces = [clamd.EICAR[i : i + 5] for i in range(0, len(clamd.EICAR), 5)]
    assert scanner.scan([b"", *pieces, b""]).infected


def test_clamd_clean_bytes_are_clean(scanner: scanners.ClamdScanner) -> None:
    clean = ScanVerdict(infected=False, signature=None, engine="clamd")
    assert scanner.scan([b"hello, broker\n" * 1000]) == clean
    assert scanner.scan([]) == clean  # an empty object
    scanner.ping()


def test_clamd_streams_50_mib_without_holding_it(clamd_address: str) -> None:
    scanner = scanners.ClamdScanner(clamd_address, timeout_seconds=60)
    block = b"\x00" * MIB  # one buffer, yielded again and again
    consumed = 0

    def object_chunks() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(50):
            consumed += 1
            yield block
        consumed += 1
        yield clamd.EICAR  # at the very end: found only if all 50 MiB went through

    tracemalloc.start()
    try:
        verdict = scanner.scan(object_chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert consumed == 51
    assert verdict.signature == clamd.TEST_SIGNATURE
    assert peak < 2 * MIB  # frames of 64 KiB, never the 50 MiB object


def test_clamd_down_is_unavailable_then_back(clamd_service: clamd.LocalClamd) -> None:
    for address in (clamd_service.address, clamd_service.tcp_address):
        scanner = scanners.ClamdScanner(address, timeout_seconds=5)
        with clamd_control.down(clamd_service):
            started = time.monotonic()
            with pytest.raises(ScannerUnavailable) as raised:
                scanner.scan([b"hello"])
            assert time.monotonic() - started < 5
            assert address in str(raised.value)
            with pytest.raises(ScannerUnavailable):
                scanner.ping()
        assert scanner.scan([clamd.EICAR]).infected  # back, with no new scanner


def test_a_clamd_that_never_answers_times_out() -> None:
    # A listener that accepts (the kernel's backlog does) and never reads nor answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        scanner = scanners.ClamdScanner(f"tcp:127.0.0.1:{port}", timeout_seconds=0.5)
        started = time.monotonic()
        with pytest.raises(ScannerUnavailable) as raised:
            scanner.scan(b"x" * 65536 for _ in range(200))  # more than the socket buffers
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3
    assert "0.5 s" in str(raised.value) or "timed out" in str(raised.value)


def test_a_connection_reset_mid_stream_is_unavailable() -> None:
    # A server that takes the first bytes, then resets the connection (SO_LINGER 0).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def reset_after_first_bytes() -> None:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        resetter = threading.Thread(target=reset_after_first_bytes)
        resetter.start()
        scanner = scanners.ClamdScanner(f"tcp:127.0.0.1:{port}", timeout_seconds=10)
        started = time.monotonic()
        with pytest.raises(ScannerUnavailable) as raised:
            scanner.scan(b"x" * 65536 for _ in range(400))
        resetter.join()
    assert time.monotonic() - started < 5
    assert "reset" in str(raised.value).lower() or "pipe" in str(raised.value).lower()


def test_an_error_reading_the_object_passes_through(clamd_address: str) -> None:
    def failing_chunks() -> Iterator[bytes]:
        yield b"first bytes"
        raise OSError("the object could not be read")

    with pytest.raises(OSError, match="could not be read"):
        scanners.ClamdScanner(clamd_address, timeout_seconds=10).scan(failing_chunks())


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clamd.LocalClamd]:
    """A second clamd whose StreamMaxLength is 1 MiB."""
    from broker.dev import devstack

    local = clamd.LocalClamd(
        tmp_path_factory.mktemp("small-clamd"), tcp_port=devstack.free_port(), stream_max_bytes=MIB
    )
    local.start()
    yield local
    local.remove()


@pytest.mark.parametrize("over_tcp", [False, True])
def test_a_stream_over_stream_max_length_is_never_clean(
    small_clamd: clamd.LocalClamd, over_tcp: bool
) -> None:
    address = small_clamd.tcp_address if over_tcp else small_clamd.address
    scanner = scanners.ClamdScanner(address, timeout_seconds=30)
    assert not scanner.scan([b"a" * MIB]).infected  # exactly the limit: scanned whole

    for size in (MIB + 1, 8 * MIB):
        verdict = scanner.scan(b"a" * 65536 for _ in range(size // 65536 + 1))
        assert verdict == ScanVerdict(True, STREAM_TOO_LONG_SIGNATURE, "clamd")


# --- the command engine -----------------------------------------------------------------


def command(script: str, timeout: float = 10) -> scanners.CommandScanner:
    return scanners.CommandScanner(["sh", "-c", script], timeout_seconds=timeout)


def test_command_exit_0_is_clean() -> None:
    verdict = command("cat > /dev/null").scan([b"hello"] * 100)
    assert verdict == ScanVerdict(infected=False, signature=None, engine="command:sh")


def test_command_exit_1_is_infected_with_the_first_line_of_stdout() -> None:
    scanner = command("wc -c | tr -d ' '; echo second line; exit 1")
    verdict = scanner.scan(b"x" * 65536 for _ in range(160))  # 10 MiB, through a 64 KiB pipe
    assert verdict == ScanVerdict(True, str(160 * 65536), "command:sh")


def test_command_signature_is_bounded_and_may_be_missing() -> None:
    long_line = command("cat > /dev/null; head -c 100000 /dev/zero | tr '\\0' S; exit 1")
    assert long_line.scan([b"x"]).signature == "S" * scanners.MAX_SIGNATURE_CHARS
    assert command("cat > /dev/null; exit 1").scan([b"x"]) == ScanVerdict(True, None, "command:sh")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("cat > /dev/null; exit 2", "exited with status 2"),
        ("cat > /dev/null; kill -SEGV $$", "killed by signal 11"),
        ("exit 0", "before reading the whole object"),  # clean without reading: no verdict
    ],
)
def test_command_failures_are_no_verdict(script: str, message: str) -> None:
    with pytest.raises(ScannerUnavailable) as raised:
        command(script).scan(b"x" * 65536 for _ in range(64))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "script",
    [
        "sleep 30",  # never reads: the writes block on a full pipe
        "cat > /dev/null; sleep 30",  # reads everything, then never exits
    ],
)
def test_command_hanging_past_the_timeout_is_killed(script: str) -> None:
    started = time.monotonic()
    with pytest.raises(ScannerUnavailable) as raised:
        command(script, timeout=0.5).scan(b"x" * 65536 for _ in range(64))
    assert time.monotonic() - started < 3
    assert "no verdict within 0.5 s" in str(raised.value)


def test_command_gets_none_of_the_broker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_JWT_SECRET", "s3cret-s3cret-s3cret")
    monkeypatch.setenv("SCAN_ENGINE_LICENSE", "kept")
    scanner = command("cat > /dev/null; env | grep -e BROKER_ -e SCAN_ENGINE_; exit 1")
    assert scanner.scan([b"x"]).signature == "SCAN_ENGINE_LICENSE=kept"


def test_command_missing_program_is_no_verdict(tmp_path: Path) -> None:
    scanner = scanners.CommandScanner([str(tmp_path / "no-such-engine"), "--token=hunter2"], 5)
    with pytest.raises(ScannerUnavailable) as raised:
        scanner.scan([b"x"])
    assert "no-such-engine" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_clamdscan_fits_the_command_contract(
    clamd_address: str, clamd_service: clamd.LocalClamd
) -> None:
    # Debian's clamdscan, reading the object on stdin, exits 0 / 1 / 2 like the contract.
    scanner = scanners.CommandScanner(
        ["clamdscan", "--no-summary", f"--config-file={clamd_service.config_file}", "-"], 30
    )
    assert not scanner.scan([b"hello"]).infected
    verdict = scanner.scan([clamd.EICAR])
    assert verdict.infected
    assert verdict.signature == f"stream: {clamd.TEST_SIGNATURE} FOUND"


def test_local_clamd_starts_again_after_being_killed(tmp_path: Path) -> None:
    # A SIGKILLed clamd leaves its socket file and pid file behind; start() copes with both.
    local = clamd.LocalClamd(tmp_path / "clamd")
    try:
        local.start()
        assert local.process is not None
        local.process.kill()
        local.process.wait()
        assert local.socket_path.exists()
        with pytest.raises(ScannerUnavailable):
            scanners.ClamdScanner(local.address, timeout_seconds=5).ping()

        local.start()

        assert scanners.ClamdScanner(local.address, timeout_seconds=5).scan([clamd.EICAR]).infected
        assert 0 < local.started_in_seconds < 60
        assert 0 < local.rss_bytes() < 200 * MIB
    finally:
        local.remove()
    assert not local.state_dir.exists()
