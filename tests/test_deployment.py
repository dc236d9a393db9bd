"""Deployment Engine as the README lays it out, on 127.0.0.1: an authenticated SuperLink whose
Control API stays on loopback, a Fleet gateway, registered SuperNodes, intruders, `flwr run`."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from coopasd.config.settings import RunConfig, to_toml, with_overrides
from coopasd.federation.auth import generate_supernode_keys
from coopasd.federation.tls import generate_certificates
from tests.helpers import make_tree
from tests.helpers.deployment import deployment

APP_DIR = Path(__file__).resolve().parents[1] / "deploy"
# SecAgg+ uploads a factory's masked update as one object (8 bytes a value: 15.4 MB for this model, as the
# server logs it); the gateway's default 8 MB cap would refuse it (413) and halt the secure round
SECAGG_GATEWAY_MB = 32.0


def _tls_handshake(address: str, ca: Path) -> dict:
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert()


def _post(address: str, path: str, ca: Path) -> int:
    """Status of ``POST path`` (sent byte for byte, no normalisation) with an empty protobuf body."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=str(ca)), timeout=10)
    try:
        conn.request("POST", path, body=b"", headers={"Content-Type": "application/protobuf"})
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.3)
    return proc.poll()


def test_only_registered_supernodes_train_and_control_stays_off_the_fleet_address(tmp_path):
    # Prepare: TLS material, the two factories' keys (registered by the operator), an intruder's own key
    data = make_tree(tmp_path / "data", machines=("fan", "valve"), train_source=6, train_target=2, test_per_domain=6)
    certs = tmp_path / "certs"
    generate_certificates(certs)
    keys = generate_supernode_keys(tmp_path / "keys", ["fan", "valve"])
    intruder_key = generate_supernode_keys(tmp_path / "intruder", ["fan"])["fan"]  # a key no one registered
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "federation", rounds=2, local_epochs=1, evaluate_every=0)

    def node_config(m: str) -> str:
        return f'data-dir="{data}" factory="{m}" machines="{m}" work-dir="{tmp_path / ("own-" + m)}"'

    with deployment(tmp_path, certs, tmp_path / "keys", max_body_mb=SECAGG_GATEWAY_MB) as run:
        # the factories' address speaks TLS with our CA's certificate ...
        assert ("IP Address", "127.0.0.1") in _tls_handshake(run.fleet, certs / "ca.crt")["subjectAltName"]
        # ... and does not lead to the Control API (job submission, SuperNode registration), which
        # answers only on the SuperLink's loopback address
        for path in ("/v1/control/list-runs", "/v1/fleet/../control/list-runs", "/v1/fleet/%2e%2e/control/start-run"):
            assert _post(run.fleet, path, certs / "ca.crt") == 404, path
        assert _post(run.control, "/v1/control/list-runs", certs / "ca.crt") != 404
        intruders = [
            run.supernode("intruder-ca-only", node_config("fan"), key=None),  # holds only the public ca.crt
            run.supernode("intruder-own-key", node_config("fan"), key=intruder_key),
        ]
        for m in ("fan", "valve"):
            run.supernode(f"supernode-{m}", node_config(m), key=keys[m])

        # Execute: an app submitted through the factories' address goes nowhere, intruders are
        # turned away; the operator submits the run on the SuperLink host (Control on 127.0.0.1)
        overrides = tmp_path / "run-config.toml"
        run_config = {"run-config": to_toml(cfg), "run-dir": str(tmp_path / "server"), "factories": 2}
        overrides.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()))

        def flwr_run(connection: str, *extra: str) -> subprocess.CompletedProcess:
            command = [str(Path(sys.executable).with_name("flwr")), "run", str(APP_DIR), connection, *extra]
            return subprocess.run(command, env=run.env, capture_output=True, text=True, timeout=600)

        foreign = flwr_run("via-fleet")
        assert foreign.returncode != 0, foreign.stdout[-2000:]
        for intruder, name in zip(intruders, ("intruder-ca-only", "intruder-own-key"), strict=True):
            assert _wait_exit(intruder, 90) not in (None, 0), run.log(name)[-2000:]
            assert "Failed to initialize the connection to the SuperLink" in run.log(name), run.log(name)[-2000:]
        done = flwr_run("coopasd", "--stream", "--run-config", str(overrides))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert run.log("superlink").count("/v1/control/start-run") == 1  # only the operator's run reached it
        assert "refused POST b'/v1/control/start-run'" in run.log("gateway")
        # the same factories, one round through SecAgg+ (Deployment Engine): the server holds only the sum
        secure = with_overrides(
            with_overrides(cfg, "federation", rounds=1, aggregation="mean"), "privacy", secure_aggregation=True
        )
        overrides.write_text(
            "".join(
                f"{k} = {json.dumps(v)}\n"
                for k, v in (run_config | {"run-config": to_toml(secure), "run-dir": str(tmp_path / "secure")}).items()
            )
        )
        done_secure = flwr_run("coopasd", "--stream", "--run-config", str(overrides))
        assert done_secure.returncode == 0, done_secure.stdout[-2000:] + done_secure.stderr[-2000:]

    # Assert: the two registered factories, and only they, trained; results stayed at home
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
    secured = json.loads((tmp_path / "secure" / "federation.json").read_text())
    (only,) = secured["rounds"]
    assert only["aggregated"] and only["answered"] == 2 and secured["privacy"]["secure_aggregation"]
    assert only["privacy"]["mechanism"] == "secagg+" and sorted(only["privacy"]["factories"]) == ["fan", "valve"]
