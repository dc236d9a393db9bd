"""Hostile inputs for issue 16's doors (hypothesis): Fleet gateway requests (paths, headers, bodies),
submission folders with missing, duplicated or garbled csvs, factory specs, config files (huge,
deeply nested, binary, special files). Each case ends in a correct result or one clear error line
naming the file or value; never a traceback, a hang (each example has a deadline) or a silent wrong
answer. Derandomized, no example database; ``--hypothesis-show-statistics`` prints the counts.
Cases: gateway 150, submissions 120, factory specs 120, config files 80 (470).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import httpx
import numpy as np
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from coopasd.config.settings import MAX_CONFIG_BYTES, PartitionConfig, load_run_config
from coopasd.data.layout import parse_clip_path
from coopasd.data.partition import parse_factories
from coopasd.dcase.evaluation import decision_file_name, read_submission, score_file_name
from coopasd.errors import ConfigError, SubmissionError
from coopasd.federation.gateway import FLEET_CALL, create_gateway
from coopasd.federation.limits import GatewayLimits
from coopasd.rundir.writer import write_submission
from tests.helpers.asgi import call_asgi_counting

HOSTILE = settings(
    deadline=20_000,  # ms per example: a hang (a FIFO read, a body read forever) fails instead of stalling
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no explain phase: it reruns slow cases
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def one_line(err: Exception, starts: str) -> None:
    """A message a person can act on: one line, naming the file or value first."""
    text = str(err)
    assert text.startswith(starts) and "\n" not in text and "Traceback" not in text, text


# ---------------------------------------------------------------- the Fleet gateway

FLEET = ["pull-messages", "push-messages", "push-object", "pull-object", "send-node-heartbeat", "activate-node"]
PATHS = st.sampled_from(
    [f"/v1/fleet/{c}" for c in FLEET] * 3
    + ["/v1/control/start-run", "/v1/fleet/", "/v1/fleet/../control/start-run", "/v1/fleet/%2e%2e/x", "/", "/docs"]
)
LENGTHS = st.sampled_from(
    ["exact"] * 6
    + ["none"] * 6
    + ["smaller", "larger", "huge"] * 2
    + ["\xb2", "1\xb3", "-1", "abc", "", " ", "1e3", "0x10", "+5", "99999999999999999999999", "\u0663"]
)
JUNK_HEADERS = st.lists(
    st.tuples(
        st.sampled_from([b"connection", b"transfer-encoding", b"x-junk", b"host", b"flwr-signature", b"te"]),
        st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v),
    ),
    max_size=3,
)
CAP = 2000  # bytes: small, so that the drawn bodies fall on both sides of it


class SuperLink:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        return httpx.Response(200, content=b"ok")


@settings(HOSTILE, max_examples=150)
@given(
    st.sampled_from(["POST"] * 12 + ["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    PATHS,
    st.sampled_from([b""] * 7 + [b"x=1"]),
    st.binary(max_size=CAP)
    | st.binary(min_size=CAP - 5, max_size=CAP + 5)
    | st.binary(min_size=CAP + 1, max_size=3 * CAP),
    st.integers(1, 4),
    LENGTHS,
    JUNK_HEADERS,
)
def test_any_request_is_forwarded_exactly_or_refused_with_the_right_status(
    method, path, query, body, pieces, length, junk
):
    superlink = SuperLink()
    app = create_gateway(
        "127.0.0.1:9093", None, transport=httpx.MockTransport(superlink), limits=GatewayLimits(CAP / 1e6)
    )
    cut = max(1, len(body) // pieces)
    chunks = [body[i : i + cut] for i in range(0, len(body), cut)] or [b""]
    declared = {"exact": str(len(body)), "smaller": str(max(0, len(body) - 1)), "larger": str(len(body) + 1)}
    declared |= {"huge": str(10**12), "none": None}
    value = declared.get(length, length)
    headers = [(k, v) for k, v in junk if k not in (b"content-length",)]
    if value is not None:
        headers.append((b"content-length", value.encode("utf-8")))

    async def one() -> tuple[int, bytes, int]:
        async with app.router.lifespan_context(app):
            return await call_asgi_counting(app, method, path.encode(), headers, chunks, query)

    status, _, pulled = asyncio.run(one())  # an exception here is a 500 / traceback: the test fails
    fleet = method == "POST" and FLEET_CALL.fullmatch(path) is not None and not query
    text = (value or "").strip()
    valid_length = value is None or (text.isascii() and text.isdigit())
    if not fleet:
        expected = 404
    elif not valid_length:
        expected = 400
    elif (value is not None and int(text) > CAP) or len(body) > CAP:
        expected = 413
    else:
        expected = 200
    event(f"gateway {expected}")
    assert status == expected, (status, expected, method, path, value, len(body))
    if expected == 200:
        assert superlink.bodies == [body]  # forwarded byte for byte
    else:
        assert superlink.bodies == []  # a refused request never reaches the SuperLink
    if expected == 413:
        assert pulled <= len(chunks) and sum(len(c) for c in chunks[: max(0, pulled - 1)]) <= CAP


# ---------------------------------------------------------------- submission folders

MACHINES = ("fan", "valve")
KINDS = [(d, lab) for d in ("source", "target") for lab in ("normal", "anomaly")]
CLIPS = [
    parse_clip_path(Path(m) / "test" / f"section_00_{d}_test_{lab}_{i:04d}.wav", m, "test")
    for m in MACHINES
    for n, (d, lab) in enumerate(KINDS)
    for i in range(3 * n, 3 * n + 3)
]
HARMLESS = ["none", "reorder rows", "blank lines", "CRLF line ends", "stray backup file", "spaces around scores"]
HARMFUL = [
    "score file deleted",
    "decision file deleted",
    "row left out",
    "row twice",
    "row twice by path",
    "row of an unknown clip",
    "nan score",
    "inf score",
    "text score",
    "header row",
    "binary garbage",
    "not UTF-8",
    "empty file",
    "NUL byte",
    "name cut short",
    "decision 2",
    "decision 0.5",
    "decision row left out",
    "one column",
    "huge field",
]


def _damage(sub: Path, kind: str, machine: str, row: int) -> None:
    score, decision = sub / score_file_name(machine, "00"), sub / decision_file_name(machine, "00")
    lines = [line for line in score.read_text().splitlines() if line.strip()]
    row %= len(lines)
    name = lines[row].split(",")[0]
    edits = {
        "reorder rows": lambda: "\n".join(lines[row:] + lines[:row]) + "\n",
        "blank lines": lambda: "\n\n".join(lines) + "\n\n",
        "CRLF line ends": lambda: "\r\n".join(lines) + "\r\n",
        "spaces around scores": lambda: "\n".join(ln.replace(",", ", ") + " " for ln in lines) + "\n",
        "row left out": lambda: "\n".join(lines[:row] + lines[row + 1 :]) + "\n",
        "row twice": lambda: "\n".join([*lines, lines[row]]) + "\n",
        "row twice by path": lambda: "\n".join([*lines, f"{machine}/test/{lines[row]}"]) + "\n",
        "row of an unknown clip": lambda: "\n".join([*lines, "section_00_source_test_normal_9999.wav,0.5"]) + "\n",
        "nan score": lambda: "\n".join([*lines[:row], f"{name},nan", *lines[row + 1 :]]) + "\n",
        "inf score": lambda: "\n".join([*lines[:row], f"{name},-inf", *lines[row + 1 :]]) + "\n",
        "text score": lambda: "\n".join([*lines[:row], f"{name},high", *lines[row + 1 :]]) + "\n",
        "header row": lambda: "file_name,anomaly_score\n" + "\n".join(lines) + "\n",
        "name cut short": lambda: "\n".join([*lines[:row], f"{name[:-7]},0.5", *lines[row + 1 :]]) + "\n",
        "one column": lambda: "\n".join([*lines[:row], name, *lines[row + 1 :]]) + "\n",
        "huge field": lambda: "\n".join([*lines, "x" * 200_000 + ",1"]) + "\n",
    }
    if kind in edits:
        score.write_text(edits[kind]())
    elif kind == "score file deleted":
        score.unlink()
    elif kind == "decision file deleted":
        decision.unlink()
    elif kind == "stray backup file":
        (sub / (score.name + ".bak")).write_text("junk,1\n")
    elif kind == "binary garbage":
        score.write_bytes(bytes(range(256)) * 4)
    elif kind == "not UTF-8":
        score.write_bytes(score.read_bytes().replace(b".wav", b"\xff.wav", 1))
    elif kind == "empty file":
        score.write_bytes(b"")
    elif kind == "NUL byte":
        score.write_bytes(score.read_bytes().replace(b",", b"\0,", 1))
    elif kind.startswith("decision"):
        d = decision.read_text().splitlines()
        if kind == "decision row left out":
            d.pop(row % len(d))
        else:
            d[row % len(d)] = f"{d[row % len(d)].split(',')[0]},{kind.split()[1]}"
        decision.write_text("\n".join(d) + "\n")


@settings(HOSTILE, max_examples=120)
@given(
    st.tuples(st.lists(st.sampled_from(HARMLESS), max_size=2), st.none() | st.sampled_from(HARMFUL)).map(
        lambda d: d[0] + [d[1]] * (d[1] is not None)  # harmless changes first, then at most one harmful one
    ),
    st.sampled_from(MACHINES),
    st.integers(0, 11),
    st.integers(0, 2**32 - 1),
)
def test_any_submission_folder_gives_the_true_metrics_or_one_line_naming_the_file(damages, machine, row, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        for m in MACHINES:
            test = [c for c in CLIPS if c.machine_type == m]
            scores = rng.normal(size=len(test)) + np.array([c.label == "anomaly" for c in test])
            write_submission(run, m, "00", [c.name for c in test], scores, (scores > 0.5).astype(int))
        truth = _read(run / "submission")
        for kind in damages:
            _damage(run / "submission", kind, machine, row)
        try:
            got = _read(run / "submission")
        except SubmissionError as err:
            event("SubmissionError")
            one_line(err, str(run / "submission"))
            assert set(damages) & set(HARMFUL), f"a harmless change was refused: {damages}: {err}"
            return
    event("evaluated")
    assert not set(damages) & set(HARMFUL), f"silently evaluated a damaged submission: {damages}"
    assert got == truth  # the very clips, scores and decisions: the metrics cannot differ


def _read(submission: Path) -> list[tuple]:
    """What ``coopasd evaluate`` computes its metrics from (read as it reads it), per section."""
    run = read_submission(submission, CLIPS)
    return [(s.machine_type, [c.name for c in s.clips], s.scores.tolist(), s.decisions.tolist()) for s in run.sections]


# ---------------------------------------------------------------- factory specs

DATA_MACHINES = ["fan", "valve", "pump"]
NAMES = ["a", "b", "north", "A", "ü", "a b", "plant-1"]
PERTURB = [None] * 4 + ["duplicate name", "empty name", "machine twice", "unknown machine", "machine left out"]
PERTURB += ["name with =", "no =", "empty part", "spaces", "empty members"]


@st.composite
def factory_specs(draw) -> str:
    """A valid partition of DATA_MACHINES written as a spec, perhaps then broken in one way; or any text."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(alphabet="ab=+; fanvlepu", max_size=30))
    machines = draw(st.permutations(DATA_MACHINES))
    cuts = sorted(draw(st.sets(st.integers(1, len(machines) - 1), max_size=len(machines) - 1)))
    groups = [list(machines[i:j]) for i, j in zip([0, *cuts], [*cuts, len(machines)], strict=True)]
    names = draw(st.lists(st.sampled_from(NAMES), min_size=len(groups), max_size=len(groups), unique=True))
    parts = [[n, g] for n, g in zip(names, groups, strict=True)]
    how = draw(st.sampled_from(PERTURB))
    if how == "duplicate name" and len(parts) > 1:
        parts[-1][0] = parts[0][0]
    elif how == "empty name":
        parts[0][0] = ""
    elif how == "machine twice":
        parts[-1][1] = [*parts[-1][1], parts[0][1][0]]
    elif how == "unknown machine":
        parts[0][1] = [*parts[0][1], "gearbox"]
    elif how == "machine left out":
        parts[0][1] = parts[0][1][1:]
    elif how == "name with =":
        parts[0][0] += "=x"
    elif how == "empty members":
        parts[0][1] = []
    text = [f"{n}={'+'.join(g)}" for n, g in parts]
    if how == "no =":
        text[0] = text[0].replace("=", "", 1)
    elif how == "empty part":
        text.insert(1, " ")
    elif how == "spaces":
        text = [f"  {t.replace('=', ' = ').replace('+', ' + ')} " for t in text]
    return ";".join(text)


SPECS = factory_specs()


@settings(HOSTILE, max_examples=120)
@given(SPECS)
def test_any_factory_spec_is_a_correct_partition_or_one_line(spec):
    try:
        PartitionConfig(factories=spec)  # the check made when a config or flag is read
        factories = parse_factories(spec, DATA_MACHINES)  # the one made once the data is known
    except ConfigError as err:
        event("ConfigError")
        assert "\n" not in str(err) and str(err)
        return
    event("partitioned")
    names = [f.name for f in factories]
    assert len(set(names)) == len(names) and all(names)  # no factory lost to a duplicate name
    members = [m for f in factories for m in f.machine_types]
    assert sorted(members) == sorted(DATA_MACHINES)  # every machine type in exactly one factory
    if spec.strip():
        stated = [p.split("=", 1)[0].strip() for p in spec.split(";") if p.strip()]
        assert names == stated  # the factories are the ones the spec names, in its order


# ---------------------------------------------------------------- config files

SPECIAL = ["fifo", "/dev/zero", "/dev/null", "/dev/urandom", "directory", "symlink to /dev/zero", "dangling symlink"]
SPECIAL += ["symlink loop", "missing", "file as a folder", "/proc/self/mem", "just under the cap", "just over the cap"]


def _config_file(tmp: Path, kind: str, depth: int, noise: bytes) -> tuple[Path, bool]:
    """(the path ``--config`` gets, whether it must load)."""
    path = tmp / "c.toml"
    valid = "[train]\nepochs = 3\n"
    contents = {
        "nested arrays": f"a = {'[' * depth}{']' * depth}\n",
        "nested tables": f"a = {'{b=' * depth}1{'}' * depth}\n",
        "random bytes": noise,
        "valid after a BOM": b"\xef\xbb\xbf" + valid.encode(),
        "valid with CRLF": valid.replace("\n", "\r\n"),
        "NUL inside": valid.encode() + b"\0" + noise,
        "not UTF-8": valid.encode() + b"\xff\xfe" + noise,
        "just under the cap": "#" * (MAX_CONFIG_BYTES - len(valid) - 2) + "\n" + valid,
        "just over the cap": "#" * MAX_CONFIG_BYTES + "\n" + valid,
    }
    if kind in contents:
        data = contents[kind]
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path, kind in ("valid with CRLF", "just under the cap")
    links = {"symlink to /dev/zero": "/dev/zero", "dangling symlink": str(tmp / "gone"), "symlink loop": str(path)}
    if kind in links:
        path.symlink_to(links[kind])
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "file as a folder":
        path.write_text(valid)
        return path / "inner.toml", False
    elif kind != "missing":
        return Path(kind), False
    return path, False


@settings(HOSTILE, max_examples=80)
@given(
    st.sampled_from(SPECIAL + ["random bytes", "valid after a BOM", "valid with CRLF", "NUL inside", "not UTF-8"])
    | st.sampled_from(["nested arrays", "nested tables"]),
    st.sampled_from([1, 10, 100, 500, 1000, 5000]),
    st.binary(max_size=300),
)
def test_any_config_file_loads_or_is_one_line_naming_it(kind, depth, noise):
    with tempfile.TemporaryDirectory() as tmp:
        path, loads = _config_file(Path(tmp), kind, depth, noise)
        try:
            cfg = load_run_config(path)
        except ConfigError as err:
            event(f"ConfigError ({kind})")
            one_line(err, str(path))
            assert not loads, f"{kind}: a good file was refused: {err}"
            if kind == "just over the cap":
                assert "larger than" in str(err)
            return
    event(f"loaded ({kind})")
    assert kind not in SPECIAL[:-2] and kind != "just over the cap", f"{kind} loaded"
    if kind != "nested arrays" and kind != "nested tables" and kind != "random bytes":
        assert cfg.train.epochs == 3  # what loads is what the file says
