"""Malware scanning engines: clamd over its socket (zINSTREAM), or any command fed on stdin.

Both are blocking (the caller runs scan() in a thread) and stream the object in the chunks
they are given: nothing is buffered whole and nothing is written to disk. Both give up
after `timeout_seconds` for the whole scan, from connecting to the verdict, including the
time spent waiting for the next chunk, so a job lease longer than the timeout always
outlasts the scan it covers. Any failure to get a verdict is ScannerUnavailable
(retryable); only an engine's explicit answer is a verdict, and nothing else is clean.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from broker import config
from broker.domain.scanning import STREAM_TOO_LONG_SIGNATURE, ScannerUnavailable, ScanVerdict

MAX_SIGNATURE_CHARS = 200
MAX_REPLY_BYTES = 4096
_END_OF_STREAM = struct.pack(">I", 0)


class _Deadline:
    """The time left of one scan's budget."""

    def __init__(self, seconds: float, engine: str) -> None:
        self.seconds = seconds
        self.engine = engine
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise ScannerUnavailable(f"{self.engine} gave no verdict within {self.seconds:g} s")
        return remaining


def _frames(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks cut to at most `size` bytes, empty ones dropped (a zero length ends the
    stream for clamd, so an empty chunk must never be sent as a frame)."""
    for chunk in chunks:
        if len(chunk) <= size:
            if chunk:
                yield chunk
            continue
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])


def parse_clamd_reply(reply: bytes) -> ScanVerdict:
    """clamd's answer to zINSTREAM as a verdict, or ScannerUnavailable when it is none."""
    text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
    if text == "stream: OK":
        return ScanVerdict(infected=False, signature=None, engine=ClamdScanner.name)
    body = text.removeprefix("stream:").strip()
    if text.startswith("stream:") and (body == "FOUND" or body.endswith(" FOUND")):
        signature = body.removesuffix("FOUND").strip()
        return ScanVerdict(True, signature[:MAX_SIGNATURE_CHARS] or None, ClamdScanner.name)
    if text == "INSTREAM size limit exceeded. ERROR":
        # Deterministic: the same file is always too long, so retrying (or finalizing it as
        # "scan skipped" under fail-open) would be wrong. It is held like an infected file.
        return ScanVerdict(True, STREAM_TOO_LONG_SIGNATURE, ClamdScanner.name)
    if text.endswith("ERROR"):
        raise ScannerUnavailable(f"clamd answered an error: {text[:MAX_SIGNATURE_CHARS]}")
    raise ScannerUnavailable(f"clamd gave no verdict (reply: {text[:MAX_SIGNATURE_CHARS]!r})")


class ClamdScanner:
    """clamd at `unix:/path/to/clamd.ctl` or `tcp:host:port`, fed with zINSTREAM."""

    name = "clamd"

    def __init__(self, address: str, timeout_seconds: float, chunk_size: int = 64 * 1024) -> None:
        self.address = address
        self.target = config.parse_clamd_address(address)
        self.timeout_seconds = timeout_seconds
        self.chunk_size = chunk_size

    def _connect(self, deadline: _Deadline) -> socket.socket:
        try:
            if isinstance(self.target, tuple):
                return socket.create_connection(self.target, timeout=deadline.left())
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.left())
                sock.connect(self.target)
            except OSError:
                sock.close()
                raise
            return sock
        except OSError as exc:
            raise ScannerUnavailable(f"cannot reach clamd at {self.address}: {exc}") from exc

    def _read_reply(self, sock: socket.socket, deadline: _Deadline) -> bytes:
        """Everything up to clamd's NUL terminator (or its closing the connection)."""
        reply = b""
        while not reply.endswith(b"\0") and len(reply) < MAX_REPLY_BYTES:
            sock.settimeout(deadline.left())
            data = sock.recv(MAX_REPLY_BYTES)
            if not data:
                break
            reply += data
        return reply

    def ping(self) -> None:
        """Return when clamd answers PING with PONG; raise ScannerUnavailable otherwise."""
        deadline = _Deadline(self.timeout_seconds, self.name)
        with self._connect(deadline) as sock:
            try:
                sock.settimeout(deadline.left())
                sock.sendall(b"zPING\0")
                reply = self._read_reply(sock, deadline)
            except OSError as exc:
                raise ScannerUnavailable(f"clamd at {self.address} failed: {exc}") from exc
        if reply.rstrip(b"\0") != b"PONG":
            raise ScannerUnavailable(f"clamd at {self.address} did not answer PING")

    def scan(self, chunks: Iterable[bytes]) -> ScanVerdict:
        """Stream the chunks to clamd and return its verdict (blocking). An exception raised
        by the chunks themselves (the object could not be read) passes through unchanged."""
        deadline = _Deadline(self.timeout_seconds, self.name)
        with self._connect(deadline) as sock:
            failure = _send(sock, b"zINSTREAM\0", deadline)
            if failure is None:
                for frame in _frames(chunks, self.chunk_size):
                    failure = _send(sock, struct.pack(">I", len(frame)) + frame, deadline)
                    if failure is not None:
                        break
                else:
                    failure = _send(sock, _END_OF_STREAM, deadline)
            # After a failed send the answer may still be waiting: clamd stops reading and
            # answers at once when the stream is longer than its StreamMaxLength.
            try:
                reply = self._read_reply(sock, deadline)
            except OSError as exc:
                raise ScannerUnavailable(f"clamd at {self.address} failed: {failure or exc}") from (
                    failure or exc
                )
            if failure is not None and not reply:
                raise ScannerUnavailable(f"clamd at {self.address} failed: {failure}") from failure
        return parse_clamd_reply(reply)


def _send(sock: socket.socket, data: bytes, deadline: _Deadline) -> OSError | None:
    """Send all of `data` within the deadline; the socket error, if any, is returned."""
    try:
        sock.settimeout(deadline.left())
        sock.sendall(data)
    except OSError as exc:
        return exc
    return None


class CommandScanner:
    """Any engine as a command: the object on stdin; exit 0 clean, 1 infected (the first line
    of stdout names the signature), anything else, or no exit within the timeout, no verdict.

    The command runs in its own process group, killed whole at the deadline, with the
    broker's environment minus every BROKER_* variable. Its stderr goes to the broker's
    stderr; neither stderr nor the arguments appear in error messages.
    """

    def __init__(self, argv: list[str], timeout_seconds: float) -> None:
        if not argv:
            raise ValueError("the scan command is empty")
        self.argv = list(argv)
        self.timeout_seconds = timeout_seconds
        self.program = Path(argv[0]).name
        self.name = f"command:{self.program}"

    def scan(self, chunks: Iterable[bytes]) -> ScanVerdict:
        """Run the command with the chunks on its stdin and return its verdict (blocking)."""
        deadline = _Deadline(self.timeout_seconds, self.name)
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
                # The broker's own settings (secrets among them) are none of the engine's business.
                env={k: v for k, v in os.environ.items() if not k.startswith("BROKER_")},
            )
        except OSError as exc:
            raise ScannerUnavailable(
                f"cannot run scan command {self.program}: {exc.strerror}"
            ) from exc
        timed_out = threading.Event()
        timer = threading.Timer(deadline.left(), _kill_group, args=(process, timed_out))
        timer.daemon = True
        timer.start()
        output: list[bytes] = []
        reader = threading.Thread(target=_read_bounded, args=(process.stdout, output), daemon=True)
        reader.start()
        read_all = True
        try:
            assert process.stdin is not None
            try:
                for chunk in chunks:
                    deadline.left()
                    if chunk:
                        process.stdin.write(chunk)
                process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                read_all = False  # it exited (or was killed) before reading everything
            code = process.wait(timeout=deadline.left())
        except subprocess.TimeoutExpired:
            timed_out.set()
        finally:
            timer.cancel()
            if process.poll() is None:
                _kill_group(process)
                process.wait()
            _close_quietly(process.stdin)
            reader.join(timeout=5)
        if timed_out.is_set():
            raise ScannerUnavailable(
                f"{self.name} gave no verdict within {self.timeout_seconds:g} s"
            )
        return self._verdict(code, read_all, b"".join(output))

    def _verdict(self, code: int, read_all: bool, stdout: bytes) -> ScanVerdict:
        if code == 1:
            lines = stdout.decode("utf-8", "replace").strip().splitlines()
            signature = lines[0].strip()[:MAX_SIGNATURE_CHARS] if lines else ""
            return ScanVerdict(infected=True, signature=signature or None, engine=self.name)
        if code == 0 and read_all:
            return ScanVerdict(infected=False, signature=None, engine=self.name)
        if code == 0:
            raise ScannerUnavailable(f"{self.name} exited 0 before reading the whole object")
        if code < 0:
            raise ScannerUnavailable(f"{self.name} was killed by signal {-code}")
        raise ScannerUnavailable(f"{self.name} exited with status {code}")


def _kill_group(process: subprocess.Popen[bytes], timed_out: threading.Event | None = None) -> None:
    if timed_out is not None:
        timed_out.set()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_bounded(stream: IO[bytes] | None, into: list[bytes]) -> None:
    """Keep the first MAX_REPLY_BYTES of the stream and drain the rest (so the command never
    blocks on a full pipe)."""
    if stream is None:
        return
    kept = 0
    with stream:
        while data := stream.read(65536):
            if kept < MAX_REPLY_BYTES:
                into.append(data[: MAX_REPLY_BYTES - kept])
                kept += len(into[-1])


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


def scanner_from_settings(settings: config.Settings) -> ClamdScanner | CommandScanner | None:
    """The engine the settings name (BROKER_CLAMD_ADDRESS or BROKER_SCAN_COMMAND), or None."""
    if settings.clamd_address:
        return ClamdScanner(settings.clamd_address, settings.scan_timeout_seconds)
    if settings.scan_command:
        return CommandScanner(shlex.split(settings.scan_command), settings.scan_timeout_seconds)
    return None
