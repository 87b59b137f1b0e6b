"""Raw vendor pages to canonical task rows: pure, vectorized, no I/O.

`normalize_tasks` reads a page through its tool's mapping into the `tasks` table's columns. A record that cannot
be read, lacks an id, or holds a value that is not what its field promises (a due date that is not a date) goes
to the quarantine frame with its raw payload and the reason; every other record of the page still loads.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mappings.extract import extract
from mappings.mapping import Condition, Mapping

TASK_COLUMNS = (
    "task_uid", "connection", "tool", "native_id", "key", "url", "project_uid", "parent_uid", "title", "status",
    "status_category", "assignee", "assignee_email", "is_milestone", "start_date", "due_date", "completed_at",
    "created_at", "updated_at", "estimate_hours", "percent_complete", "labels", "story_points",
)
QUARANTINE_COLUMNS = ("connection", "native_id", "raw_payload", "reason")


@dataclass
class NormalizedPage:
    """Canonical rows of one page, the records that could not be normalized, and the mapping's aux columns."""

    tasks: pd.DataFrame
    quarantine: pd.DataFrame
    aux: pd.DataFrame = field(default_factory=pd.DataFrame)


def normalize_tasks(
    records: Sequence[dict[str, Any]], mapping: Mapping, connection: str, timezone: str = "UTC",
) -> NormalizedPage:
    """Canonical `tasks` rows for a page of raw records of one connection (see module doc for quarantine)."""
    timezone = mapping.date_timezone or timezone
    table, rejected = extract(records, mapping.paths())
    frame = table.to_pandas()
    problems = pd.Series("", index=frame.index, dtype=object)
    specs = {**mapping.aux, **mapping.fields}
    for name, spec in specs.items():
        column = frame[name]
        if spec.type in ("date", "datetime"):
            parsed, bad = _parse_times(column, spec.type, timezone)
            problems = _note(problems, bad, column, f"{spec.path} {{value!r}} is not a {spec.type.replace('datetime', 'date and time')}")
            frame[name] = parsed
        elif spec.type in ("number", "integer") and spec.scale is not None:
            frame[name] = column.astype("float64") * spec.scale
    frame["native_id"] = _as_text(frame["native_id"])
    problems = _note(problems, frame["native_id"].isna().to_numpy(), frame["native_id"],
                     f"{mapping.fields['native_id'].path} is missing")
    bad_rows = problems.to_numpy() != ""
    quarantine = _quarantine_frame(records, connection, mapping, frame["_position"].to_numpy()[bad_rows],
                                   problems.to_numpy()[bad_rows], rejected)
    frame = frame.loc[~bad_rows].reset_index(drop=True)
    tasks = _canonical(frame, mapping, connection)
    aux = frame[list(mapping.aux)].copy() if mapping.aux else pd.DataFrame(index=frame.index)
    aux.insert(0, "task_uid", tasks["task_uid"].to_numpy())
    return NormalizedPage(tasks=tasks, quarantine=quarantine, aux=aux)


def _canonical(frame: pd.DataFrame, mapping: Mapping, connection: str) -> pd.DataFrame:
    n = len(frame)
    prefix = f"{connection}:"
    out = pd.DataFrame(index=frame.index)
    out["task_uid"] = prefix + frame["native_id"]
    out["connection"] = connection
    out["tool"] = mapping.tool
    out["native_id"] = frame["native_id"]
    for name in ("key", "url", "title", "status", "assignee", "assignee_email"):
        out[name] = _as_text(frame[name]) if name in frame else pd.Series([None] * n, dtype=object)
    out["project_uid"] = _prefixed(frame, "project_native_id", prefix)
    out["parent_uid"] = _prefixed(frame, "parent_native_id", prefix)
    out["status_category"] = _status_category(frame, mapping)
    out["is_milestone"] = _any(frame, mapping.is_milestone.any)
    for name in ("start_date", "due_date"):
        out[name] = frame[name] if name in frame else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us]")
    for name in ("completed_at", "created_at", "updated_at"):
        out[name] = frame[name] if name in frame else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    for name in ("estimate_hours", "percent_complete", "story_points"):
        out[name] = frame[name].astype("float64") if name in frame else np.nan
    done = out["status_category"].eq("done")
    out.loc[out["percent_complete"].isna() & done, "percent_complete"] = 100.0
    out.loc[out["percent_complete"].isna() & out["status_category"].eq("todo"), "percent_complete"] = 0.0
    out["labels"] = _labels(frame["labels"]) if "labels" in frame else None
    return out[list(TASK_COLUMNS)]


def _parse_times(column: pd.Series, kind: str, timezone: str) -> tuple[pd.Series, np.ndarray]:
    """Dates as naive midnights (a datetime read in `timezone`), datetimes as UTC; plus where parsing failed."""
    text = column.astype("string")
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = (text.notna() & parsed.isna()).to_numpy()
    if kind == "datetime":
        return parsed.astype("datetime64[us, UTC]"), bad
    plain_date = text.str.len().eq(10).fillna(False).to_numpy()
    local = parsed.dt.tz_convert(timezone).dt.tz_localize(None)
    as_utc_date = parsed.dt.tz_localize(None)
    dates = pd.Series(np.where(plain_date, as_utc_date, local), index=column.index).astype("datetime64[us]")
    return dates.dt.normalize(), bad


def _status_category(frame: pd.DataFrame, mapping: Mapping) -> pd.Series:
    spec = mapping.status_category
    source = _as_text(frame[spec.from_])
    category = source.map(spec.map).astype(object)
    category = category.where(category.notna(), spec.default)
    for rule in reversed(spec.rules):
        category = category.where(~_test(frame, rule), rule.then)
    return category


def _any(frame: pd.DataFrame, conditions: list[Condition]) -> pd.Series:
    result = pd.Series(False, index=frame.index)
    for condition in conditions:
        result |= _test(frame, condition)
    return result


def _test(frame: pd.DataFrame, c: Condition) -> pd.Series:
    column = frame[c.when]
    if c.is_null is not None:
        return column.isna() == c.is_null
    if c.is_true is not None:
        return column.fillna(False).astype(bool) == c.is_true
    if c.contains is not None:
        return column.map(lambda v: v is not None and not isinstance(v, float) and c.contains in list(v)).astype(bool)
    values = [c.equals] if c.in_ is None else c.in_
    return _as_text(column).isin([str(v) for v in values]) | column.isin(values)


def _as_text(column: pd.Series) -> pd.Series:
    """Ids and keys as strings (Asana gids stay text; numbers that are ids lose no digits), nulls kept."""
    if column.dtype.kind in "iu":
        return column.astype(str).astype(object)
    if column.dtype.kind == "f":
        text = column.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
        return text.astype(object)
    return column.astype(object).where(column.notna(), None)


def _prefixed(frame: pd.DataFrame, name: str, prefix: str) -> pd.Series:
    if name not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    text = _as_text(frame[name])
    return (prefix + text.fillna("")).where(text.notna(), None)


def _labels(column: pd.Series) -> pd.Series:
    # One small list per task; orjson keeps this to microseconds a row.
    return column.map(lambda v: orjson.dumps(sorted(v) if v is not None else []).decode())


def _note(problems: pd.Series, bad: np.ndarray, column: pd.Series, template: str) -> pd.Series:
    if not bad.any():
        return problems
    messages = column[bad].map(lambda value: template.format(value=value))
    problems = problems.copy()
    empty = problems[bad] == ""
    problems[bad] = np.where(empty, messages, problems[bad] + "; " + messages)
    return problems


def _quarantine_frame(
    records: Sequence[Any], connection: str, mapping: Mapping, positions: np.ndarray, reasons: np.ndarray,
    rejected: list,
) -> pd.DataFrame:
    entries = [(int(p), str(r)) for p, r in zip(positions, reasons)] + [(r.position, r.reason) for r in rejected]
    id_path = mapping.fields["native_id"].path.split(".")
    rows = []
    for position, reason in sorted(entries):
        record = records[position]
        payload = orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()
        native_id = _dig(record, id_path)
        if native_id is None or isinstance(native_id, (dict, list)):
            native_id = "sha1:" + hashlib.sha1(payload.encode()).hexdigest()
        rows.append((connection, str(native_id), payload, reason))
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS))


def _dig(record: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record

