"""DCASE 2023 Task 2 file layout: file names <-> :class:`Clip`, attribute and ground-truth csvs.

A tree looks like::

    ROOT/<machine_type>/train/section_00_source_train_normal_0001_spd_28V_mic_1.wav
    ROOT/<machine_type>/test/section_00_target_test_anomaly_0007_spd_31V_mic_2.wav
    ROOT/<machine_type>/test/section_00_0042.wav              # eval form: labels hidden
    ROOT/<machine_type>/attributes_00.csv                    # file_name,d1p,d1v,d2p,d2v,...
    ROOT/ground_truth_data/ground_truth_<machine>_section_00_test.csv    # file,label (0/1)
    ROOT/ground_truth_domain/ground_truth_<machine>_section_00_test.csv  # file,domain (0=source)
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from coopasd.errors import LayoutError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
DOMAINS = ("source", "target")
LABELS = ("normal", "anomaly")
SPLITS = ("train", "test")
GROUND_TRUTH_LABEL_DIR = "ground_truth_data"
GROUND_TRUTH_DOMAIN_DIR = "ground_truth_domain"

_FULL_NAME = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<attrs>.+))?$"
)
_HIDDEN_NAME = re.compile(r"^section_(?P<section>\d{2})_(?P<index>\d+)$")


@dataclass(frozen=True)
class Clip:
    """One recording and everything its name and csvs say about it.

    ``domain`` and ``label`` are None for eval-form test clips until ground truth is applied.
    ``attributes`` is a tuple of (key, value) pairs in file-name order.
    """

    path: Path
    machine_type: str
    section: str
    split: str
    domain: str | None
    label: str | None
    index: int
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def attribute_string(self) -> str:
        """Attributes as DCASE writes them in names, e.g. ``spd_28V_mic_1`` ('' if none)."""
        return "_".join(f"{k}_{v}" for k, v in self.attributes)

    @property
    def labels_hidden(self) -> bool:
        return self.label is None or self.domain is None


def parse_attribute_string(text: str) -> tuple[tuple[str, str], ...]:
    """Split ``car_A1_spd_28V`` into pairs. DCASE's ``noAttribute`` and odd token counts are
    kept whole as a single ``("attr", text)`` pair so that no information is dropped."""
    if not text or text == "noAttribute":
        return ()
    tokens = text.split("_")
    if len(tokens) % 2:
        return (("attr", text),)
    return tuple((tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2))


def parse_clip_path(path: Path, machine_type: str, split: str) -> Clip:
    """Parse one DCASE 2023 file name. Raises :class:`LayoutError` naming the file."""
    stem = path.stem
    full = _FULL_NAME.match(stem)
    if full:
        if full["split"] != split:
            raise LayoutError(path, f"name says split '{full['split']}' but the file lies in '{split}/'")
        return Clip(
            path=path,
            machine_type=machine_type,
            section=full["section"],
            split=split,
            domain=full["domain"],
            label=full["label"],
            index=int(full["index"]),
            attributes=parse_attribute_string(full["attrs"] or ""),
        )
    hidden = _HIDDEN_NAME.match(stem)
    if hidden and split == "test":
        return Clip(path, machine_type, hidden["section"], split, None, None, int(hidden["index"]))
    raise LayoutError(
        path,
        "unparseable file name; expected section_XX_<source|target>_<split>_<normal|anomaly>_NNNN[_attrs]"
        + (".wav or (test only) section_XX_NNNN.wav" if split == "test" else ".wav"),
    )


def is_machine_dir(path: Path) -> bool:
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS)


def list_machine_types(root: Path) -> list[str]:
    """Machine-type folders under ``root`` (folders with train/ or test/ inside), sorted.

    A visible folder that is neither a machine folder nor a ground-truth folder is an error:
    it usually means the wrong root was given or a machine folder lost its train/test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(root, "data directory does not exist")
    machines: list[str] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if child.name in (GROUND_TRUTH_LABEL_DIR, GROUND_TRUTH_DOMAIN_DIR):
            continue
        if not is_machine_dir(child):
            raise LayoutError(child, "unknown machine directory: it has no train/ or test/ folder")
        machines.append(child.name)
    if not machines:
        raise LayoutError(root, "no machine-type folders (<machine>/train, <machine>/test) found")
    return machines


def discover_clips(
    root: Path,
    machine_types: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
) -> list[Clip]:
    """All clips of the tree, with attributes from ``attributes_XX.csv`` where present and
    labels/domains from the ground-truth csvs for hidden-label test clips.

    Every unparseable name in the tree is reported at once in one :class:`LayoutError`.
    """
    root = Path(root)
    available = list_machine_types(root)
    wanted = list(machine_types) if machine_types else available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise LayoutError(root, f"unknown machine type(s) {', '.join(unknown)}; found: {', '.join(available)}")
    clips: list[Clip] = []
    problems: list[LayoutError] = []
    for machine in wanted:
        if not any(_audio_files(root / machine / split) for split in SPLITS):
            problems.append(LayoutError(root / machine, "machine folder holds no audio clips in train/ or test/"))
            continue
        machine_clips: list[Clip] = []
        for split in splits:
            folder = root / machine / split
            if not folder.is_dir():
                continue
            for path in _audio_files(folder):
                try:
                    machine_clips.append(parse_clip_path(path, machine, split))
                except LayoutError as err:
                    problems.append(err)
        machine_clips = apply_attribute_csvs(root / machine, machine_clips, splits)
        clips.extend(machine_clips)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        folders = sum(1 for p in problems if p.path.is_dir())
        counts = ((len(problems) - folders, "file name(s)"), (folders, "folder(s)"))
        what = " and ".join(f"{n} {label}" for n, label in counts if n)
        raise LayoutError(root, f"{what} do not follow the DCASE layout:\n{listing}")
    return apply_ground_truth(root, clips)


def _audio_files(folder: Path) -> list[Path]:
    """The audio files (by suffix) of ``folder``, sorted; hidden files are ignored; none if it is absent."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES]


def check_trainable(clips: Iterable[Clip]) -> None:
    """Every (machine type, section) with training clips must have source-domain normal ones.

    Raises one :class:`LayoutError` naming each such section's train folder: a detector's memory
    banks start from the source domain (a section with only target-domain clips is a misnamed set).
    """
    problems: list[tuple[Path, str]] = []
    for (machine, section), group in group_by_machine_section(c for c in clips if c.split == "train").items():
        if not any(c.domain == "source" and c.label == "normal" for c in group):
            domains = "/".join(sorted({c.domain or "unknown" for c in group}))
            problems.append(
                (
                    group[0].path.parent,
                    f"{machine} section {section}: {len(group)} training clip(s), all {domains}-domain, and no "
                    "source-domain normal ones (section_XX_source_train_normal_*); a detector needs them",
                )
            )
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more section(s) like it)" if len(problems) > 1 else ""
        raise LayoutError(path, problem + more)


def read_attribute_csv(path: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Read a DCASE ``attributes_XX.csv``: ``file_name,d1p,d1v,d2p,d2v,...`` -> {basename: pairs}."""
    rows = _read_csv_rows(path, "attribute csv")
    if not rows or not rows[0] or rows[0][0] != "file_name":
        raise LayoutError(path, "attribute csv must start with a header row 'file_name,d1p,d1v,...'")
    table: dict[str, tuple[tuple[str, str], ...]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        values = [v.strip() for v in row[1:]]
        if len(values) % 2:
            raise LayoutError(path, f"line {line_no}: attribute columns must come in name,value pairs")
        pairs = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2) if values[i])
        table[Path(row[0].strip()).name] = pairs
    return table


def apply_attribute_csvs(machine_dir: Path, clips: list[Clip], splits: Sequence[str] = SPLITS) -> list[Clip]:
    """Fill attributes from ``attributes_XX.csv`` (the authority on eval data).

    A csv whose attributes disagree with a file name is an error naming both; a csv row for a
    file that is not on disk is logged (clips may have been removed on purpose).
    """
    result = list(clips)
    for csv_path in sorted(machine_dir.glob("attributes_*.csv")):
        table = read_attribute_csv(csv_path)
        present = {c.name for c in result}
        split_of = _csv_splits(csv_path)
        missing = [name for name in table if name not in present and split_of.get(name, "") in (*splits, "")]
        if missing:
            log.warning("%s lists %d file(s) not found on disk, e.g. %s", csv_path, len(missing), missing[0])
        for i, clip in enumerate(result):
            pairs = table.get(clip.name)
            if pairs is None:
                continue
            if clip.attributes and pairs and clip.attributes != _normalised(pairs, clip.attributes):
                raise LayoutError(
                    csv_path,
                    f"attributes of {clip.name} disagree with its file name: "
                    f"csv says {_fmt(pairs)}, name says {_fmt(clip.attributes)}",
                )
            if pairs and not clip.attributes:
                result[i] = replace(clip, attributes=pairs)
    return result


def _read_csv_rows(path: Path, what: str) -> list[list[str]]:
    """All rows of a UTF-8 csv; binary or undecodable content is a :class:`LayoutError` naming the file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.reader(handle))
    except UnicodeDecodeError as err:
        raise LayoutError(path, f"cannot read {what}: byte {err.start} is not UTF-8 text (a binary file?)") from err
    except csv.Error as err:
        raise LayoutError(path, f"cannot read {what}: {err} (a binary file?)") from err
    except OSError as err:
        raise LayoutError(path, f"cannot read {what} ({err.strerror or err})") from err


def _csv_splits(path: Path) -> dict[str, str]:
    """Which split folder each csv row names (``machine/train/x.wav`` -> train), '' if none."""
    rows = _read_csv_rows(path, "attribute csv")[1:]
    out: dict[str, str] = {}
    for row in rows:
        if row and row[0].strip():
            parent = Path(row[0].strip()).parent.name
            out[Path(row[0].strip()).name] = parent if parent in SPLITS else ""
    return out


def _normalised(csv_pairs: tuple[tuple[str, str], ...], name_pairs: tuple[tuple[str, str], ...]):
    """The csv pairs in the form the name parser would give (odd-token names stay whole)."""
    if len(name_pairs) == 1 and name_pairs[0][0] == "attr":
        return (("attr", "_".join(f"{k}_{v}" for k, v in csv_pairs)),)
    return csv_pairs


def _fmt(pairs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in pairs) or "(none)"


def ground_truth_paths(root: Path, machine_type: str, section: str) -> tuple[Path, Path]:
    name = f"ground_truth_{machine_type}_section_{section}_test.csv"
    return root / GROUND_TRUTH_LABEL_DIR / name, root / GROUND_TRUTH_DOMAIN_DIR / name


def _read_two_column_csv(path: Path, allowed: set[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for line_no, row in enumerate(_read_csv_rows(path, "ground-truth csv"), start=1):
        if not row:
            continue
        if len(row) < 2 or row[1].strip() not in allowed:
            if line_no == 1 and row[0].strip().lower() in ("file_name", "filename", "file"):
                continue  # tolerate a header row
            expected, found = f"file_name,{'|'.join(sorted(allowed))}", ",".join(row)[:60]
            raise LayoutError(path, f"line {line_no}: expected '{expected}', found {found!r}")
        name = Path(row[0].strip()).name
        if name in table and table[name] != row[1].strip():
            raise LayoutError(path, f"line {line_no}: {name} is listed twice with different values")
        table[name] = row[1].strip()
    return table


def apply_ground_truth(root: Path, clips: list[Clip]) -> list[Clip]:
    """Give hidden-label test clips their label and domain from the ground-truth csvs.

    Clips whose ground truth is absent stay hidden (they can be scored, not evaluated).
    """
    result = list(clips)
    groups = {(c.machine_type, c.section) for c in clips if c.split == "test" and c.labels_hidden}
    for machine, section in sorted(groups):
        label_csv, domain_csv = ground_truth_paths(root, machine, section)
        if not label_csv.exists():
            continue
        labels = _read_two_column_csv(label_csv, {"0", "1"})
        domains = _read_two_column_csv(domain_csv, {"0", "1"}) if domain_csv.exists() else {}
        if not domains:
            raise LayoutError(domain_csv, "ground-truth domain csv missing: AUC per domain needs it")
        for i, clip in enumerate(result):
            if (clip.machine_type, clip.section) != (machine, section) or not clip.labels_hidden:
                continue
            if clip.name not in labels or clip.name not in domains:
                raise LayoutError(label_csv, f"no ground truth for {clip.path}")
            result[i] = replace(
                clip,
                label="anomaly" if labels[clip.name] == "1" else "normal",
                domain="target" if domains[clip.name] == "1" else "source",
            )
    return result


def group_by_machine_section(clips: Iterable[Clip]) -> dict[tuple[str, str], list[Clip]]:
    """Clips keyed by (machine_type, section), in a stable sorted order."""
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in clips:
        groups.setdefault((clip.machine_type, clip.section), []).append(clip)
    return dict(sorted(groups.items()))
