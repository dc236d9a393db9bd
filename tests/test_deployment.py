"""Deployment Engine: a TLS SuperLink and 2 SuperNodes as real processes on 127.0.0.1, `flwr run`."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from coopasd.config import RunConfig, to_toml, with_overrides
from coopasd.federation.tls import generate_certificates
from tests.helpers import make_tree
from tests.helpers.deployment import deployment

APP_DIR = Path(__file__).resolve().parents[1] / "deploy"


def _tls_handshake(address: str, ca: Path) -> dict:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert()


def test_two_supernodes_over_tls_run_two_rounds(tmp_path):
    data = make_tree(tmp_path / "data", machines=("fan", "valve"), train_source=6, train_target=2, test_per_domain=6)
    certs = generate_certificates(tmp_path / "certs")
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "federation", rounds=2, local_epochs=1, evaluate_every=0)
    nodes = [
        f'data-dir="{data}" factory="{m}" machines="{m}" work-dir="{tmp_path / ("own-" + m)}"' for m in ("fan", "valve")
    ]
    with deployment(tmp_path, certs, nodes) as (env, address):
        peer = _tls_handshake(address, certs["ca_cert"])  # the SuperLink speaks TLS with our CA's certificate
        assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
        overrides = tmp_path / "run-config.toml"
        run_config = {"run-config": to_toml(cfg), "run-dir": str(tmp_path / "server"), "factories": 2}
        overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()))
        flwr = Path(sys.executable).with_name("flwr")
        done = subprocess.run(
            [str(flwr), "run", str(APP_DIR), "coopasd", "--stream", "--run-config", str(overrides)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "server" / "federation.json").read_text())
    r1, r2 = result["rounds"]
    assert r1["answered"] == r2["answered"] == 2 and r1["aggregated"] and r2["aggregated"]
    assert set(r2["received_hash"]) == {"fan", "valve"} and set(r2["received_hash"].values()) == {r1["global_hash"]}
    assert set(result["machines"]) == {"fan", "valve"} and 0 < result["official_score"] <= 1
    for m in ("fan", "valve"):  # each factory's results stay in its own folder
        own = tmp_path / f"own-{m}"
        assert (own / "model.pt").exists()
        assert (own / "submission" / f"anomaly_score_{m}_section_00_test.csv").exists()
    assert ".wav" not in json.dumps(result)
