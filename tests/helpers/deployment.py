"""A real Flower Deployment Engine on loopback: one SuperLink, N SuperNodes, TLS, `flwr run`.

Every process starts in its own process group and is ended with its children (SuperNodes
spawn ``flower-superexec``), so nothing outlives a test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


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
        os.killpg(proc.pid, signal.SIGKILL)
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


@contextmanager
def deployment(work: Path, certs: dict[str, Path], nodes: list[str]):
    """Start a TLS SuperLink and one SuperNode per ``--node-config`` string; yields (env, address)."""
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    env = _env(home)
    link_port = free_port()
    address = f"127.0.0.1:{link_port}"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "coopasd"\n\n[superlink.coopasd]\naddress = "{address}"\n'
        f'root-certificates = "{certs["ca_cert"]}"\n'
    )
    procs: list[subprocess.Popen] = []
    try:
        link_log = work / "superlink.log"
        link = subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile",
                str(certs["ca_cert"]),
                "--ssl-certfile",
                str(certs["server_cert"]),
                "--ssl-keyfile",
                str(certs["server_key"]),
                "--database",
                str(work / "state.db"),
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
            ],
            stdout=open(link_log, "w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=work,
        )
        procs.append(link)
        _wait_port(link_port, link, link_log)
        for i, node_config in enumerate(nodes):
            node_log = work / f"supernode{i}.log"
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "flower-supernode"),
                        "--root-certificates",
                        str(certs["ca_cert"]),
                        "--superlink",
                        address,
                        "--port",
                        str(free_port()),
                        "--node-config",
                        node_config,
                    ],
                    stdout=open(node_log, "w"),
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    cwd=work,
                )
            )
        yield env, address
    finally:
        for proc in reversed(procs):
            _stop(proc)
