"""Trust material and doors: SuperNode keys in flwr 1.42's format, no silent overwrite, the Fleet
gateway's filter, the ClientApp's refusal of foreign runs, Ray confined to loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Context, RecordDict

from coopasd.errors import CoopasdError, OverwriteError
from coopasd.federation.auth import generate_supernode_keys
from coopasd.federation.client_app import RUN_CONFIG_KEYS, settings_from_context
from coopasd.federation.gateway import create_gateway, is_fleet_call
from coopasd.federation.tls import generate_certificates
from tests.test_cli import run_cli


def test_factory_keys_load_as_flwr_loads_them_and_the_register_file_names_each(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    keys = generate_supernode_keys(tmp_path, ["north", "south"])
    for path in keys.values():
        private = load_ssh_private_key(path.read_bytes(), None)  # as flower-supernode --auth-supernode-private-key
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        registered = try_load_public_key(path.with_suffix(".pub"))  # as flwr supernode register
        assert registered == public_key_to_bytes(private.public_key())
        assert path.stat().st_mode & 0o077 == 0
    script = (tmp_path / "register.sh").read_text().splitlines()
    assert [line for line in script if line.startswith("flwr ")] == [
        f'flwr supernode register {n}.pub ${{1:+"$1"}} --name {n} || status=1' for n in ("north", "south")
    ]


def test_keys_and_ca_are_never_replaced_without_force(tmp_path, monkeypatch, capsys):
    keys = generate_supernode_keys(tmp_path / "keys", ["north"])
    before = keys["north"].read_bytes()
    with pytest.raises(OverwriteError, match="north.key: already exists"):
        generate_supernode_keys(tmp_path / "keys", ["east", "north"])
    assert not (tmp_path / "keys" / "east.key").exists() and keys["north"].read_bytes() == before
    generate_supernode_keys(tmp_path / "keys", ["east"])  # adding a factory keeps the others
    assert "east.pub" in (tmp_path / "keys" / "register.sh").read_text()
    assert "north.pub" in (tmp_path / "keys" / "register.sh").read_text()
    assert generate_supernode_keys(tmp_path / "keys", ["north"], force=True)["north"].read_bytes() != before
    with pytest.raises(CoopasdError, match="factory name"):
        generate_supernode_keys(tmp_path / "keys", ["../evil"])

    ca = generate_certificates(tmp_path / "certs")["ca_cert"].read_bytes()
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(tmp_path / "certs"))
    assert code == 2 and "ca.crt: already exists; pass --force" in text
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == ca
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(tmp_path / "certs"), "--force")
    assert code == 0 and (tmp_path / "certs" / "ca.crt").read_bytes() != ca
    code, text = run_cli(monkeypatch, capsys, "certs", "--out", str(tmp_path / "k2"), "--factory", "west")
    assert code == 0 and (tmp_path / "k2" / "west.key").exists() and not (tmp_path / "k2" / "ca.crt").exists()


@pytest.mark.parametrize(
    ("method", "path", "forwarded"),
    [
        ("POST", b"/v1/fleet/pull-messages", True),
        ("POST", b"/v1/fleet/register-node", True),
        ("POST", b"/v1/control/start-run", False),
        ("POST", b"/v1/control/register-node", False),
        ("POST", b"/v1/runtime/pull-messages", False),
        ("GET", b"/v1/fleet/pull-messages", False),
        ("POST", b"/v1/fleet/../control/start-run", False),
        ("POST", b"/v1/fleet/%2e%2e/control/start-run", False),
        ("POST", b"/v1/fleet//control", False),
        ("POST", b"/v1/fleet/", False),
        ("POST", b"/docs", False),
    ],
)
def test_only_fleet_calls_pass_the_gateway(method, path, forwarded):
    assert is_fleet_call(method, path) is forwarded


async def _through_gateway(superlink, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """Send ``(method, path, kwargs)`` requests to a gateway whose SuperLink is the function ``superlink``."""
    app = create_gateway("127.0.0.1:9093", None, transport=httpx.MockTransport(superlink))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="https://factory-net") as client:
            return [await client.request(method, path, **kwargs) for method, path, kwargs in requests]


def test_the_gateway_forwards_fleet_calls_with_their_signatures_and_nothing_else():
    seen: list[httpx.Request] = []

    def superlink(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(412, content=b"\x08\x01", headers={"content-type": "application/protobuf"})

    signed = {"content-type": "application/protobuf", "flwr-public-key": "cGs=", "flwr-signature": "c2ln"}
    reply, *refused = asyncio.run(
        _through_gateway(
            superlink,
            [
                ("POST", "/v1/fleet/activate-node", {"content": b"\x0a\x02hi", "headers": signed}),
                ("POST", "/v1/control/start-run", {"content": b"fab"}),
                ("POST", "/v1/fleet/%2e%2e/control/start-run", {"content": b"fab"}),
                ("POST", "/v1/fleet/pull-messages?x=1", {"content": b""}),
                ("GET", "/v1/fleet/pull-messages", {}),
            ],
        )
    )
    assert reply.status_code == 412 and reply.content == b"\x08\x01"  # the SuperLink's answer, as it was
    assert [r.status_code for r in refused] == [404, 404, 404, 404]
    assert len(seen) == 1  # nothing but the Fleet call reached the SuperLink
    (forwarded,) = seen
    assert str(forwarded.url) == "https://127.0.0.1:9093/v1/fleet/activate-node" and forwarded.content == b"\x0a\x02hi"
    assert forwarded.headers["flwr-signature"] == "c2ln" and forwarded.headers["flwr-public-key"] == "cGs="
    assert forwarded.headers["host"] == "127.0.0.1:9093"  # not the factory-facing name


def test_the_gateway_answers_502_when_the_superlink_is_down():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    (reply,) = asyncio.run(_through_gateway(down, [("POST", "/v1/fleet/pull-messages", {"content": b""})]))
    assert reply.status_code == 502


def _context(run_config: dict) -> Context:
    node_config = {"data-dir": "/plant/data", "machines": "fan"}
    return Context(run_id=7, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)


def test_the_client_app_refuses_runs_of_another_app():
    ours = {"run-config": "", "run-dir": "srv", "factories": 2, "resume": False}
    assert set(ours) == RUN_CONFIG_KEYS
    assert settings_from_context(_context(ours)).data_dir == Path("/plant/data")
    for foreign in ({"lr": 0.1}, {**ours, "exfiltrate": "http://x"}, {"run-config": ""}):
        with pytest.raises(ValueError, match="refusing run 7"):
            settings_from_context(_context(foreign))


def test_ray_is_confined_to_loopback_with_a_token():
    # leaves the settings in this process, as any `coopasd federate` does (Ray caches the token)
    from coopasd.federation.simulation import confine_ray

    settings = confine_ray()
    from ray._private import services

    assert services.get_node_ip_address() == "127.0.0.1"  # what every Ray server of the run binds
    assert settings == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    assert len(os.environ["RAY_AUTH_TOKEN"]) == 64
