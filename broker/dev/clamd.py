"""A local clamd (Debian's clamav-daemon) with a locally written signature database, for
`broker dev` and the tests: no freshclam, no network.

The only database is broker-test.ndb: one signature for the EICAR test string. clamd
refuses to start with no database at all, and it has no built-in EICAR detection (with
another signature only, the EICAR string scans as OK), so this file is what makes it
start and what it finds. ClamAV marks signatures from unofficial databases: the EICAR
string is reported as TEST_SIGNATURE, "Broker.Test.EICAR.UNOFFICIAL".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker.adapters import scanners
from broker.dev.devstack import StackError, terminate, wait_until
from broker.domain.scanning import ScannerUnavailable

CLAMD_BINARY = Path("/usr/sbin/clamd")
# The EICAR anti-virus test file (eicar.org), built from two halves so that this source file
# is not itself flagged by a scanner that reads it.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE_NAME = "Broker.Test.EICAR"
TEST_SIGNATURE = f"{SIGNATURE_NAME}.UNOFFICIAL"
MIB = 1024 * 1024
# Unix socket paths must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


@dataclass
class LocalClamd:
    """clamd on a unix socket in `state_dir` (and on 127.0.0.1:`tcp_port` when given)."""

    state_dir: Path
    tcp_port: int | None = None
    stream_max_bytes: int = 100 * MIB
    process: subprocess.Popen[bytes] | None = None
    started_in_seconds: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()

    @property
    def database_dir(self) -> Path:
        return self.state_dir / "db"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "clamd.conf"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "clamd.pid"

    @property
    def socket_path(self) -> Path:
        """clamd.ctl in the state folder, or under /tmp when that path is too long."""
        wanted = self.state_dir / "clamd.ctl"
        if len(str(wanted)) <= MAX_SOCKET_PATH:
            return wanted
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
        return Path("/tmp") / f"broker-clamd-{digest}.ctl"

    @property
    def address(self) -> str:
        """BROKER_CLAMD_ADDRESS for this clamd (its unix socket)."""
        return f"unix:{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        if self.tcp_port is None:
            raise StackError("this clamd listens on its unix socket only")
        return f"tcp:127.0.0.1:{self.tcp_port}"

    def write_files(self) -> None:
        """The configuration and the one signature file."""
        self.database_dir.mkdir(parents=True, exist_ok=True)
        (self.database_dir / "broker-test.ndb").write_text(
            f"{SIGNATURE_NAME}:0:*:{EICAR.hex()}\n"  # name:any file type:any offset:hex
        )
        lines = [
            "Foreground yes",
            f"LocalSocket {self.socket_path}",
            "LocalSocketMode 600",
            f"DatabaseDirectory {self.database_dir}",
            f"PidFile {self.pid_file}",
            "LogSyslog no",
            f"LogFile {self.state_dir / 'clamd.log'}",
            "LogTime yes",
            # A stream longer than this is refused ("INSTREAM size limit exceeded"); files up
            # to it are scanned whole (MaxFileSize), and AlertExceedsMax reports a file cut
            # short by any other limit as found instead of OK.
            f"StreamMaxLength {self.stream_max_bytes}",
            f"MaxFileSize {self.stream_max_bytes}",
            f"MaxScanSize {max(4 * self.stream_max_bytes, 400 * MIB)}",
            "AlertExceedsMax yes",
            "SelfCheck 0",
        ]
        if self.tcp_port is not None:
            lines += [f"TCPSocket {self.tcp_port}", "TCPAddr 127.0.0.1"]
        self.config_file.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start clamd and wait until it answers PING (records how long that took)."""
        if not CLAMD_BINARY.exists():
            raise StackError("clamd not found: apt-get install -y clamav-daemon")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.write_files()
        self.socket_path.unlink(missing_ok=True)
        began = time.monotonic()
        log = open(self.state_dir / "clamd.out", "ab")
        self.process = subprocess.Popen(
            [str(CLAMD_BINARY), "-c", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._answers, 60, f"clamd on {self.address} (log: {log.name})")
        self.started_in_seconds = time.monotonic() - began

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise StackError(
                f"clamd exited with code {self.process.returncode}; "
                f"see {self.state_dir / 'clamd.log'}"
            )
        try:
            scanners.ClamdScanner(self.address, timeout_seconds=1).ping()
        except ScannerUnavailable:
            return False
        return True

    def _stop_leftover(self) -> None:
        """Stop a clamd on our configuration left running by a run that crashed."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config_file).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 20, "the old clamd to exit")

    def rss_bytes(self) -> int:
        """clamd's resident memory now (VmRSS)."""
        assert self.process is not None, "clamd is not running"
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        """Stop clamd and wait for it to exit; afterwards its socket refuses connections."""
        if self.process is not None:
            terminate(self.process)
        self.process = None
        self.socket_path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Stop clamd and delete its folder (for throwaway instances)."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)
