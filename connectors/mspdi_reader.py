"""MS Project XML (MSPDI, "Save as XML") read in pure Python: the raw records MPXJ gives for the same bytes, without
starting a JVM.

`read_mspdi(content, prefix)` returns (project title or None, raw records) for an MSPDI file, and None for anything
else: not MSPDI (an .mpp, other XML, garbage), or MSPDI that this reader does not reproduce MPXJ on, which then goes
to MPXJ as before (`MsProjectConnector` falls back on None). `parse` is the same but raises `Unsupported` with the
reason. The records are those of `connectors.msproject.project_records(read_project(content), prefix)` with
`project_title`, field for field and in the same order; the semantics below are MPXJ's (16.x: `MSPDIReader`,
`TaskContainer.updateStructure`, `RelationContainer.addPredecessor`, `Duration.convertUnits`), checked against it by
tests/test_mspdi_reader.py.

- Which bytes: what UniversalProjectReader would hand to MSPDIReader and MSPDIReader would decode the same way: at
  least 512 bytes (after a UTF-8 byte order mark) whose first 512 carry an MSPDI fingerprint, UTF-8 (MPXJ decodes
  UTF-8 whatever the XML declaration says, so another declared encoding goes to MPXJ), no DOCTYPE, and a root
  `Project` in the MSPDI namespace. XML the parser rejects goes to MPXJ, which gives its own error for a broken file.
- Tasks, in file order. IDs must rise strictly from 0 or more in row order (MS Project writes them so): MPXJ
  renumbers them otherwise, by rules of its own, so such files go to MPXJ; so do repeated UIDs. UID 0 and null rows
  (`IsNull`) are not records but take part in the outline. Parents come from OutlineLevel in row order
  (OutlineNumber is not used), as `updateStructure` does: a deeper row is the child of the row above it, a
  shallower one climbs to the first ancestor above its level. `summary` is "has children" (the file's `Summary` is
  ignored, as MPXJ does), and a missing WBS is generated from the parent's the way MPXJ does. A file of one row
  gets no outline at all.
- Values as MPXJ parses them: booleans are "0"/"1", integers plain decimals, dates `YYYY-MM-DDTHH:MM:SS` (an empty
  element is None); a value written any other way (MPXJ reads "true" as false, drops fractions of seconds, moves
  Feb 30 to Feb 28...) goes to MPXJ. A repeated element counts once, the last one (JAXB). A missing Finish is the
  Start for a milestone; for a task with a Duration MPXJ works it out from the calendars, so that goes to MPXJ.
  Baseline 0 is the `Baseline` whose Number is 0 or absent (the last one).
- Resources: the task's `Assignments` in file order, one entry per assignment whose ResourceUID is a resource of the
  file (-65535, MS Project's "no resource", is none), with its Name and EmailAddress. A resource UID given twice
  (MPXJ renumbers the clash) goes to MPXJ.
- Predecessors: `PredecessorLink`s in file order, to a task of the file (links to unknown UIDs are dropped, links to
  null rows kept), Type 0=FF, 1=FS, 2=SF, 3=SS (other numbers, and none, are FS); a link equal (type and lag) to
  the first one already read to the same predecessor is dropped. LinkLag counts tenths of a minute; MPXJ turns it
  into a duration in the LagFormat's unit (hours without one; percent formats take the raw number) with
  MinutesPerDay (default 480), MinutesPerWeek (5 days) and DaysPerMonth (20), then `lag_days` into days: both
  conversions are repeated here step by step, in the same floating-point operations. An unknown LagFormat (MPXJ
  takes the project's duration format) and cross-project links (MPXJ inserts placeholder tasks) go to MPXJ.

Elements outside the MSPDI namespace where a field is read go to MPXJ (its parser puts every element in that
namespace). MPXJ also reads what records do not use (calendars, rates, extended attributes) and could fail on a
malformed part of it where this reader, which skips it, does not.
"""
from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from connectors.msproject import raw_record

log = logging.getLogger("pmsync.connectors.msproject")

NAMESPACE = "http://schemas.microsoft.com/project"
SNIFF_BYTES = 512  # UniversalProjectReader peeks at this many bytes and gives up on a shorter file
NO_RESOURCE = -65535  # MS Project's ResourceUID for an assignment without a resource
UTF8_BOM = b"\xef\xbb\xbf"

# UniversalProjectReader's MSPDI fingerprints, matched against the first SNIFF_BYTES bytes.
_FINGERPRINTS = (
    re.compile(rb'xmlns="http://schemas\.microsoft\.com/project'),
    re.compile(rb"<Project.*<SaveVersion>", re.DOTALL),
    re.compile(rb"<Project.*<Title>", re.DOTALL),
)
_DECLARATION = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_INT = re.compile(r"-?[0-9]+").fullmatch
_DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+").fullmatch
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}").fullmatch
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

_NS = "{" + NAMESPACE + "}"
_PROJECT, _TASKS, _TASK, _RESOURCES, _RESOURCE, _ASSIGNMENTS, _ASSIGNMENT = (
    _NS + name for name in ("Project", "Tasks", "Task", "Resources", "Resource", "Assignments", "Assignment"))
_LINK, _BASELINE = _NS + "PredecessorLink", _NS + "Baseline"

# MPXJ's TimeUnit values that a lag can take, and the LagFormat codes that name them
# (DatatypeConverter.parseDurationTimeUnits; an absent LagFormat is HOURS).
(MINUTES, ELAPSED_MINUTES, HOURS, ELAPSED_HOURS, DAYS, ELAPSED_DAYS, WEEKS, ELAPSED_WEEKS, MONTHS, ELAPSED_MONTHS,
 PERCENT, ELAPSED_PERCENT) = ("m", "em", "h", "eh", "d", "ed", "w", "ew", "mo", "emo", "%", "e%")
LAG_UNITS = {
    3: MINUTES, 35: MINUTES, 4: ELAPSED_MINUTES, 36: ELAPSED_MINUTES, 5: HOURS, 37: HOURS, 6: ELAPSED_HOURS,
    38: ELAPSED_HOURS, 7: DAYS, 39: DAYS, 53: DAYS, 8: ELAPSED_DAYS, 40: ELAPSED_DAYS, 9: WEEKS, 41: WEEKS,
    10: ELAPSED_WEEKS, 42: ELAPSED_WEEKS, 11: MONTHS, 43: MONTHS, 12: ELAPSED_MONTHS, 44: ELAPSED_MONTHS,
    19: PERCENT, 51: PERCENT, 20: ELAPSED_PERCENT, 52: ELAPSED_PERCENT,
}
LINK_TYPES = {0: "FF", 1: "FS", 2: "SF", 3: "SS"}  # RelationType.getInstance: any other number is FS


class Unsupported(ValueError):
    """The bytes are not MSPDI, or MSPDI that this reader does not read exactly as MPXJ does (the message says why)."""


def read_mspdi(content: bytes, prefix: str) -> tuple[str | None, list[dict[str, Any]]] | None:
    """(title or None, raw records) of an MSPDI file, as MPXJ reads it; None when MPXJ must read the bytes."""
    try:
        return parse(content, prefix)
    except Unsupported as exc:
        if looks_like_mspdi(content):
            log.debug("MSPDI read by MPXJ, not in Python: %s", exc)
        return None


def looks_like_mspdi(content: bytes) -> bool:
    """Whether UniversalProjectReader would take the bytes for MSPDI (its fingerprints, without parsing)."""
    body = content[3:] if content.startswith(UTF8_BOM) else content
    head = body[:SNIFF_BYTES]
    return len(head) == SNIFF_BYTES and any(f.search(head) for f in _FINGERPRINTS)


def parse(content: bytes, prefix: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(title or None, raw records) of an MSPDI file; `Unsupported` when it is not one this reader reproduces."""
    root = _root(content)
    header = _fields(root, "the project")
    title = _string(header.get(_NS + "Title"))
    mpd = _int(header.get(_NS + "MinutesPerDay"))
    mpw = _int(header.get(_NS + "MinutesPerWeek"))
    dpm = _int(header.get(_NS + "DaysPerMonth"))
    mpd = 480.0 if mpd is None else float(mpd)
    defaults = (mpd, 5.0 * mpd if mpw is None else float(mpw), 20.0 if dpm is None else float(dpm))

    rows = [_Row(element) for element in _members(header.get(_TASKS), _TASK, "Tasks")]
    by_uid: dict[int, _Row] = {}
    last_id: int | None = None
    for row in rows:
        if row.uid in by_uid:
            raise Unsupported(f"two tasks have UID {row.uid}")
        by_uid[row.uid] = row
        if row.id < 0 or (last_id is not None and row.id <= last_id):
            raise Unsupported(f"task IDs do not rise from 0 in row order (ID {row.id} after {last_id}): MPXJ "
                              "renumbers them")
        last_id = row.id
    for row in rows:
        row.read_links(by_uid, defaults)
    if len(rows) > 1:
        _outline(rows)
    _assign(header, by_uid)
    records = [row.record(prefix, defaults) for row in rows if not row.null and row.uid != 0]
    return (title or None), records


# -- the document ---------------------------------------------------------------------------------------------

def _root(content: bytes) -> ET.Element:
    """The root element of bytes MPXJ would read as MSPDI and decode as this parser does, else `Unsupported`."""
    if not looks_like_mspdi(content):
        raise Unsupported("not MSPDI (no MSPDI fingerprint in the first 512 bytes, or too short)")
    body = content[3:] if content.startswith(UTF8_BOM) else content
    declared = _DECLARATION.match(body)
    if declared and declared.group(1).lower() != b"utf-8":
        raise Unsupported(f"declared encoding {declared.group(1).decode('ascii', 'replace')}: MPXJ reads UTF-8")
    if b"<!DOCTYPE" in body:
        raise Unsupported("the document has a DOCTYPE")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise Unsupported(f"not well-formed XML ({exc})") from None
    if root.tag != _PROJECT:
        raise Unsupported(f"the root element is {root.tag}, not Project in the MSPDI namespace")
    return root


def _fields(element: ET.Element | None, where: str) -> dict[str, ET.Element]:
    """An element's children by tag, the last of a repeated one (as JAXB keeps it)."""
    fields: dict[str, ET.Element] = {}
    if element is not None:
        for child in element:
            if not child.tag.startswith(_NS):
                raise Unsupported(f"{where} holds {child.tag}, outside the MSPDI namespace")
            fields[child.tag] = child
    return fields


def _members(container: ET.Element | None, tag: str, where: str) -> list[ET.Element]:
    """The `tag` children of a container (Tasks, Resources, Assignments); other MSPDI elements are ignored."""
    if container is None:
        return []
    members = []
    for child in container:
        if child.tag == tag:
            members.append(child)
        elif not child.tag.startswith(_NS):
            raise Unsupported(f"{where} holds {child.tag}, outside the MSPDI namespace")
    return members


def _string(element: ET.Element | None) -> str | None:
    """An element's text ("" when empty), None when absent."""
    if element is None:
        return None
    if len(element):
        raise Unsupported(f"{_local(element)} holds elements, not text")
    return element.text or ""


def _local(element: ET.Element) -> str:
    """An element's name without its namespace."""
    return element.tag.rpartition("}")[2]


def _int(element: ET.Element | None) -> int | None:
    text = _string(element)
    if text is None:
        return None
    if not _INT(text) or not _INT_MIN <= int(text) <= _INT_MAX:
        raise Unsupported(f"{_local(element)} is {text!r}, not a plain 32-bit integer")  # type: ignore[arg-type]
    return int(text)


def _bool(element: ET.Element | None) -> bool:
    text = _string(element)
    if text is None:
        return False
    if text not in ("0", "1"):
        raise Unsupported(f"{_local(element)} is {text!r}, not 0 or 1")  # type: ignore[arg-type]
    return text == "1"


def _date(element: ET.Element | None) -> str | None:
    """A date as MPXJ gives it (`YYYY-MM-DDTHH:MM:SS`), None when absent or empty."""
    text = _string(element)
    if not text:
        return None
    if _DATE(text):
        try:
            datetime.fromisoformat(text)
            return text
        except ValueError:
            pass
    raise Unsupported(f"{_local(element)} is {text!r}, not a YYYY-MM-DDTHH:MM:SS time")  # type: ignore[arg-type]


def _percent(element: ET.Element | None) -> float | None:
    text = _string(element)
    if text is None:
        return None
    if _INT(text) and _INT_MIN <= int(text) <= _INT_MAX:
        return float(int(text))
    if _DECIMAL(text):
        return float(text)
    raise Unsupported(f"PercentComplete is {text!r}")


# -- tasks ----------------------------------------------------------------------------------------------------

class _Row:
    """One Task element: what a record needs, read as MPXJ reads it (a null row only has its UID and ID)."""

    __slots__ = ("uid", "id", "null", "fields", "links", "baselines", "level", "wbs", "parent", "children",
                 "predecessors", "resources")

    def __init__(self, element: ET.Element) -> None:
        fields: dict[str, ET.Element] = {}
        links: list[ET.Element] = []
        baselines: list[ET.Element] = []
        for child in element:
            tag = child.tag
            if tag == _LINK:
                links.append(child)
            elif tag == _BASELINE:
                baselines.append(child)
            elif tag.startswith(_NS):
                fields[tag] = child
            else:
                raise Unsupported(f"a task holds {tag}, outside the MSPDI namespace")
        uid, row_id = _int(fields.get(_NS + "UID")), _int(fields.get(_NS + "ID"))
        if uid is None or row_id is None:
            raise Unsupported("a task has no UID or no ID")
        self.uid: int = uid
        self.id: int = row_id
        self.null = _bool(fields.get(_NS + "IsNull"))
        self.fields = fields
        self.links = links
        self.baselines = baselines
        self.level = None if self.null else _int(fields.get(_NS + "OutlineLevel"))
        self.wbs = None if self.null else _string(fields.get(_NS + "WBS"))
        self.parent: _Row | None = None
        self.children = 0
        self.predecessors: list[tuple[_Row, str, float, str]] = []  # (predecessor, type, lag, lag unit)
        self.resources: list[dict[str, str | None]] = []

    def read_links(self, by_uid: dict[int, _Row], defaults: tuple[float, float, float]) -> None:
        """The row's PredecessorLinks as MPXJ's relations (MSPDIReader.readPredecessor, then addPredecessor)."""
        for link in self.links:
            fields = _fields(link, "a PredecessorLink")
            uid = _int(fields.get(_NS + "PredecessorUID"))
            if uid is None:
                continue
            if _bool(fields.get(_NS + "CrossProject")):
                raise Unsupported("a cross-project link: MPXJ inserts a placeholder task for it")
            predecessor = by_uid.get(uid)
            if predecessor is None:
                continue
            kind = _int(fields.get(_NS + "Type"))
            kind_name = "FS" if kind is None else LINK_TYPES.get(kind, "FS")
            fmt = _int(fields.get(_NS + "LagFormat"))
            if fmt is not None and fmt not in LAG_UNITS:
                raise Unsupported(f"LagFormat {fmt}: MPXJ falls back on the project's duration format")
            unit = HOURS if fmt is None else LAG_UNITS[fmt]
            raw = _int(fields.get(_NS + "LinkLag")) or 0
            if raw == 0:
                lag = 0.0
            elif unit in (PERCENT, ELAPSED_PERCENT):
                lag = float(raw)
            else:
                lag = convert_units(raw / 10.0, MINUTES, unit, *defaults)
            # addPredecessor drops a link equal to the first one already read to the same predecessor.
            first = next((r for r in self.predecessors if r[0] is predecessor), None)
            if first is None or not _same_relation(first, kind_name, lag, unit):
                self.predecessors.append((predecessor, kind_name, lag, unit))

    def record(self, prefix: str, defaults: tuple[float, float, float]) -> dict[str, Any]:
        f = self.fields
        start = _date(f.get(_NS + "Start"))
        finish = _date(f.get(_NS + "Finish"))
        milestone = _bool(f.get(_NS + "Milestone"))
        if finish is None and start is not None:  # MSPDIReader.validateFinishDate
            if milestone:
                finish = start
            elif _string(f.get(_NS + "Duration")):
                raise Unsupported(f"task {self.uid} has a Start and a Duration but no Finish: MPXJ computes it")
        baseline_finish = None
        for baseline in self.baselines:
            fields = _fields(baseline, "a Baseline")
            number = _int(fields.get(_NS + "Number")) or 0
            if number == 0:
                baseline_finish = _date(fields.get(_NS + "Finish"))
        notes = _string(f.get(_NS + "Notes"))
        return raw_record(
            prefix,
            uid=self.uid,
            id=self.id,
            name=_string(f.get(_NS + "Name")) or None,
            outline_level=self.level,
            outline_number=_string(f.get(_NS + "OutlineNumber")) or None,
            wbs=self.wbs or None,
            summary=self.children > 0,
            milestone=milestone,
            percent_complete=_percent(f.get(_NS + "PercentComplete")),
            start=start,
            finish=finish,
            baseline_finish=baseline_finish,
            actual_start=_date(f.get(_NS + "ActualStart")),
            actual_finish=_date(f.get(_NS + "ActualFinish")),
            created=_date(f.get(_NS + "CreateDate")),
            parent_uid=self.parent.uid if self.parent is not None else None,
            notes=notes or None,
            resources=self.resources,
            predecessors=[{"uid": p.uid, "type": kind, "lag_days": lag_days(lag, unit, *defaults)}
                          for p, kind, lag, unit in self.predecessors],
        )


def _outline(rows: list[_Row]) -> None:
    """Parents, child counts and missing WBS codes from the outline levels in row order, as MPXJ's
    `TaskContainer.updateStructure` builds them (null rows sit at the top level and are skipped)."""
    top = 0  # rows at the top level so far (the project summary row and null rows included)
    last: _Row | None = None
    last_level = -1
    for row in rows:
        parent: _Row | None = None
        if not row.null:
            level = row.level or 0
            if last is not None:
                if level == last_level:
                    parent = last.parent
                elif level > last_level:
                    parent = last
                else:
                    while level <= last_level:
                        parent = last.parent
                        if parent is None:
                            break
                        last_level = parent.level or 0
                        last = parent
            last, last_level = row, level
            if row.wbs is None:  # Task.generateWBS
                if parent is None:
                    row.wbs = "0" if row.uid == 0 else str(top + 1)
                elif parent.wbs == "0":
                    row.wbs = str(parent.children + 1)
                else:
                    row.wbs = f"{parent.wbs}.{parent.children + 1}"
        row.parent = parent
        if parent is None:
            top += 1
        else:
            parent.children += 1


def _assign(header: dict[str, ET.Element], by_uid: dict[int, _Row]) -> None:
    """Each task's resources from the Assignments, in file order (a missing resource is no resource)."""
    resources: dict[int, dict[str, str | None]] = {}
    for element in _members(header.get(_RESOURCES), _RESOURCE, "Resources"):
        fields = _fields(element, "a Resource")
        uid = _int(fields.get(_NS + "UID"))
        if uid is None:
            continue
        if uid in resources or uid == NO_RESOURCE:
            raise Unsupported(f"resource UID {uid} is given twice, or is MS Project's 'no resource'")
        resources[uid] = {"name": _string(fields.get(_NS + "Name")) or None,
                          "email": _string(fields.get(_NS + "EmailAddress")) or None}
    for element in _members(header.get(_ASSIGNMENTS), _ASSIGNMENT, "Assignments"):
        fields = _fields(element, "an Assignment")
        task_uid, resource_uid = _int(fields.get(_NS + "TaskUID")), _int(fields.get(_NS + "ResourceUID"))
        if task_uid is None or resource_uid is None:
            continue
        row = by_uid.get(task_uid)
        resource = resources.get(resource_uid)
        if row is not None and resource is not None:
            row.resources.append(dict(resource))


# -- durations ------------------------------------------------------------------------------------------------

def convert_units(duration: float, source: str, target: str, minutes_per_day: float, minutes_per_week: float,
                  days_per_month: float) -> float:
    """MPXJ's Duration.convertUnits for the units a lag can take: through minutes, in the same operations."""
    if source == target:
        return duration
    if source == MONTHS:
        duration *= minutes_per_day * days_per_month
    elif source == ELAPSED_MONTHS:
        duration *= 60 * 24 * 30
    elif source == WEEKS:
        duration *= minutes_per_week
    elif source == ELAPSED_WEEKS:
        duration *= 60 * 24 * 7
    elif source == DAYS:
        duration *= minutes_per_day
    elif source == ELAPSED_DAYS:
        duration *= 60 * 24
    elif source in (HOURS, ELAPSED_HOURS):
        duration *= 60
    if target in (HOURS, ELAPSED_HOURS):
        duration /= 60
    elif target == DAYS:
        duration = duration / minutes_per_day if minutes_per_day != 0 else 0.0
    elif target == ELAPSED_DAYS:
        duration /= 60 * 24
    elif target == WEEKS:
        duration = duration / minutes_per_week if minutes_per_week != 0 else 0.0
    elif target == ELAPSED_WEEKS:
        duration /= 60 * 24 * 7
    elif target == MONTHS:
        product = minutes_per_day * days_per_month
        duration = duration / product if minutes_per_day != 0 and days_per_month != 0 else 0.0
    elif target == ELAPSED_MONTHS:
        duration /= 60 * 24 * 30
    return duration


def lag_days(lag: float, unit: str, minutes_per_day: float, minutes_per_week: float, days_per_month: float) -> float:
    """A lag in days as `connectors.msproject.lag_days` gives it."""
    return round(float(convert_units(lag, unit, DAYS, minutes_per_day, minutes_per_week, days_per_month)), 4)


def _same_relation(relation: tuple[_Row, str, float, str], kind: str, lag: float, unit: str) -> bool:
    """RelationContainer.addPredecessor's duplicate test: same type, and lags equal by Duration.compareTo (the new
    lag in the old one's unit with the fixed 8-hour day, 40-hour week and 20-day month, within 0.00001)."""
    _, old_kind, old_lag, old_unit = relation
    if old_kind != kind:
        return False
    if unit != old_unit:
        lag = convert_units(lag, unit, old_unit, 480.0, 2400.0, 20.0)
    return abs(old_lag - lag) < 0.00001
