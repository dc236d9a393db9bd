"""A real Flower Deployment Engine on loopback, laid out as the README tells an operator to.

One SuperLink with TLS and SuperNode authentication, listening on 127.0.0.1 only (its Control
API included); a ``coopasd gateway`` in front of it, the address the SuperNodes dial; the
factories' public keys registered with the operator's ``register.sh``; one SuperNode per
factory with its private key. Every process starts in its own process group and is ended
with its children (SuperLink and SuperNodes spawn ``flower-superexec``), so nothing outlives a test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
COOPASD = [sys.executable, "-c", "from coopasd.cli.app import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children (flower-superexec) left in the group
    except ProcessLookupError:
        pass


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} did not open:\n{log.read_text()[-3000:]}")


@dataclass
class Deployment:
    """A running deployment: ``control`` is the SuperLink (127.0.0.1 only), ``fleet`` the gateway."""

    work: Path
    certs: Path
    env: dict[str, str]
    control: str
    fleet: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = self.work / f"{name}.log"
        proc = subprocess.Popen(
            command,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            cwd=self.work,
        )
        self.procs.append(proc)
        return proc

    def supernode(self, name: str, node_config: str, key: Path | None) -> subprocess.Popen:
        """A SuperNode dialing the gateway; ``key`` its private key (None: it holds only ca.crt)."""
        command = [str(BIN / "flower-supernode"), "--root-certificates", str(self.certs / "ca.crt")]
        command += ["--superlink", self.fleet, "--port", str(free_port()), "--node-config", node_config]
        command += ["--auth-supernode-private-key", str(key)] if key else []
        return self.start(name, command)

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text()


@contextmanager
def deployment(work: Path, certs: Path, keys: Path, max_body_mb: float = 8.0) -> Iterator[Deployment]:
    """Start the SuperLink (TLS, --enable-supernode-auth, 127.0.0.1) and the gateway (bodies up to
    ``max_body_mb``); register ``keys``' factories."""
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    link_port, gate_port = free_port(), free_port()
    run = Deployment(work, certs, _env(home), f"127.0.0.1:{link_port}", f"127.0.0.1:{gate_port}")
    connections = {"coopasd": run.control, "via-fleet": run.fleet}  # the operator's; an intruder's try
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "coopasd"\n'
        + "".join(
            f'\n[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{certs / "ca.crt"}"\n'
            for name, address in connections.items()
        )
    )
    try:
        tls = ["--ssl-ca-certfile", certs / "ca.crt", "--ssl-certfile", certs / "server.pem"]
        tls += ["--ssl-keyfile", certs / "server.key"]
        link = run.start(
            "superlink",
            [str(BIN / "flower-superlink"), *map(str, tls), "--enable-supernode-auth"]
            + ["--database", str(work / "state.db"), "--disable-runtime-dependency-installation"]
            + ["--host", "127.0.0.1", "--port", str(link_port)],
        )
        gate = run.start(
            "gateway",
            [*COOPASD, "gateway", "--certs", str(certs), "--superlink", run.control]
            + ["--host", "127.0.0.1", "--port", str(gate_port), "--max-body-mb", str(max_body_mb)],
        )
        _wait_port(link_port, link, work / "superlink.log")
        _wait_port(gate_port, gate, work / "gateway.log")
        registered = subprocess.run(
            ["sh", str(keys / "register.sh"), "coopasd"], env=run.env, capture_output=True, text=True, timeout=120
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        yield run
    finally:
        for proc in reversed(run.procs):
            _stop(proc)
