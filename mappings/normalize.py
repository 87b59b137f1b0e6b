"""Raw vendor pages to canonical task rows: pure, vectorized, no I/O.

`normalize_tasks` reads a page through its tool's mapping into the `tasks` table's columns. A record that cannot
be read, lacks an id, or holds a value that is not what its field promises (a due date that is not a date) goes
to the quarantine frame with its raw payload and the reason; every other record of the page still loads.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mappings.extract import extract
from mappings.mapping import Condition, Mapping

TASK_COLUMNS = (
    "task_uid", "connection", "tool", "native_id", "key", "url", "project_uid", "parent_uid", "title", "status",
    "status_category", "assignee", "assignee_email", "is_milestone", "start_date", "due_date", "completed_at",
    "created_at", "updated_at", "estimate_hours", "percent_complete", "labels", "story_points",
)
QUARANTINE_COLUMNS = ("connection", "native_id", "raw_payload", "reason")
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass
class NormalizedPage:
    """Canonical rows of one page, the records that could not be normalized, and the mapping's aux columns.

    `table` holds the task rows as Arrow columns typed as the warehouse stores them (dates as date32, times as UTC
    microseconds, labels as JSON text), which is what the load path writes; `tasks` and `aux` are the same rows as
    pandas frames, built only when asked for.
    """

    table: pa.Table
    quarantine: pd.DataFrame
    aux_table: pa.Table

    @cached_property
    def tasks(self) -> pd.DataFrame:
        return _to_pandas(self.table)

    @cached_property
    def aux(self) -> pd.DataFrame:
        return _to_pandas(self.aux_table)


def normalize_tasks(
    records: Sequence[dict[str, Any]], mapping: Mapping, connection: str, timezone: str = "UTC",
) -> NormalizedPage:
    """Canonical `tasks` rows for a page of raw records of one connection (see module doc for quarantine).

    Every step is an Arrow kernel over whole columns: a page costs a few dozen kernel calls whatever its size, so
    normalizing a 5,000-record group costs about what a 100-record page does. The rare inputs the kernels do not
    cover (a date in an unusual ISO form, a condition on a non-text column) go through pandas, column by column.
    """
    timezone = mapping.date_timezone or timezone
    table, rejected = extract(records, mapping.paths())
    columns = {name: _single(table.column(name)) for name in table.column_names}
    n = table.num_rows
    problems: list[tuple[np.ndarray, list[str]]] = []
    specs = {**mapping.aux, **mapping.fields}
    for name, spec in specs.items():
        column = columns[name]
        if spec.type in ("date", "datetime"):
            parsed, bad = _parse_times(column, spec.type, timezone)
            if bad.any():
                template = f"{spec.path} {{value!r}} is not a {spec.type.replace('datetime', 'date and time')}"
                problems.append((bad, [template.format(value=v) for v in column.filter(pa.array(bad)).to_pylist()]))
            columns[name] = parsed
        elif spec.type in ("number", "integer") and spec.scale is not None:
            columns[name] = pc.multiply(pc.cast(column, pa.float64()), spec.scale)
    columns["native_id"] = _text(columns["native_id"])
    missing = columns["native_id"].is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        problems.append((missing, [f"{mapping.fields['native_id'].path} is missing"] * int(missing.sum())))
    bad_rows = np.zeros(n, dtype=bool)
    for bad, _ in problems:
        bad_rows |= bad
    positions = columns["_position"].to_numpy(zero_copy_only=False)
    quarantine = _quarantine_frame(records, connection, mapping, positions[bad_rows], _reasons(problems, bad_rows),
                                   rejected)
    if bad_rows.any():
        keep = pa.array(~bad_rows)
        columns = {name: column.filter(keep) for name, column in columns.items()}
    tasks = _canonical(columns, mapping, connection, n - int(bad_rows.sum()))
    aux = pa.table({"task_uid": tasks.column("task_uid"), **{name: columns[name] for name in mapping.aux}})
    return NormalizedPage(table=tasks, quarantine=quarantine, aux_table=aux)


def _single(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _reasons(problems: list[tuple[np.ndarray, list[str]]], bad_rows: np.ndarray) -> list[str]:
    """Each bad row's reasons, joined with '; ' in the order the checks ran."""
    reasons: dict[int, list[str]] = {}
    for bad, messages in problems:
        for row, message in zip(np.flatnonzero(bad).tolist(), messages):
            reasons.setdefault(row, []).append(message)
    return ["; ".join(reasons[row]) for row in np.flatnonzero(bad_rows).tolist()]


def _canonical(columns: dict[str, pa.Array], mapping: Mapping, connection: str, n: int) -> pa.Table:
    prefix = pa.scalar(f"{connection}:")
    out: dict[str, pa.Array] = {}
    out["task_uid"] = pc.binary_join_element_wise(prefix, columns["native_id"], "")
    out["connection"] = pa.repeat(pa.scalar(connection), n)
    out["tool"] = pa.repeat(pa.scalar(mapping.tool), n)
    out["native_id"] = columns["native_id"]
    for name in ("key", "url", "title", "status", "assignee", "assignee_email"):
        out[name] = _text(columns[name]) if name in columns else pa.nulls(n, pa.string())
    for name, source in (("project_uid", "project_native_id"), ("parent_uid", "parent_native_id")):
        out[name] = (pc.binary_join_element_wise(prefix, _text(columns[source]), "") if source in columns
                     else pa.nulls(n, pa.string()))
    out["status_category"] = _status_category(columns, mapping, n)
    out["is_milestone"] = _any(columns, mapping.is_milestone.any, n)
    for name in ("start_date", "due_date"):
        out[name] = columns[name] if name in columns else pa.nulls(n, pa.date32())
    for name in ("completed_at", "created_at", "updated_at"):
        out[name] = columns[name] if name in columns else pa.nulls(n, TIMESTAMP)
    for name in ("estimate_hours", "percent_complete", "story_points"):
        out[name] = pc.cast(columns[name], pa.float64()) if name in columns else pa.nulls(n, pa.float64())
    unknown = out["percent_complete"].is_null()
    category = out["status_category"]
    out["percent_complete"] = pc.if_else(
        pc.and_(unknown, pc.equal(category, "done")), 100.0,
        pc.if_else(pc.and_(unknown, pc.equal(category, "todo")), 0.0, out["percent_complete"]),
    )
    out["labels"] = _labels(columns["labels"]) if "labels" in columns else pa.nulls(n, pa.string())
    return pa.table([out[name] for name in TASK_COLUMNS], names=list(TASK_COLUMNS))


def _parse_times(column: pa.Array, kind: str, timezone: str) -> tuple[pa.Array, np.ndarray]:
    """Dates as date32 (a datetime read in `timezone`), datetimes as UTC microseconds; plus where parsing failed.

    The ISO 8601 forms the tools send are parsed by Arrow; a column holding anything else (or a value Arrow
    rejects) is parsed whole by pandas, whose rules these are.
    """
    n = len(column)
    target = TIMESTAMP if kind == "datetime" else pa.date32()
    if column.null_count == n:
        return pa.nulls(n, target), np.zeros(n, dtype=bool)
    try:
        return _parse_iso(column, kind, timezone), np.zeros(n, dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, _NotIso):
        return _parse_times_pandas(column, kind, timezone)


class _NotIso(Exception):
    """A value is not in one of the ISO 8601 forms Arrow parses the way pandas does."""


_ISO = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?)?$"
_ZONED = r"(Z|[+-]\d{2}:?\d{2})$"
_UTC_NANOSECONDS = pa.timestamp("ns", "UTC")


def _parse_iso(column: pa.Array, kind: str, timezone: str) -> pa.Array:
    if not pc.all(pc.match_substring_regex(column, _ISO)).as_py():
        raise _NotIso
    plain = pc.equal(pc.utf8_length(column), 10)
    if kind == "date" and pc.all(plain).as_py():
        return pc.cast(column, pa.date32())
    # Nanoseconds first: pandas reads a column at the finest precision its values hold, and whether it can hold a
    # year outside 1677-2262 depends on that, so such columns are left to it. Arrow truncates to microseconds
    # towards zero where pandas floors, which differs only before 1970: pandas reads those columns too.
    nanoseconds, has_plain = _as_utc_nanoseconds(column, plain)
    if pc.less(pc.min(pc.cast(nanoseconds, pa.int64())), 0).as_py():
        raise _NotIso
    instants = pc.cast(nanoseconds, TIMESTAMP, safe=False)
    if kind == "datetime":
        return instants
    local = instants if timezone == "UTC" else pc.local_timestamp(pc.cast(instants, pa.timestamp("us", timezone)))
    dates = pc.cast(pc.cast(local, pa.timestamp("us")), pa.date32())
    if not has_plain:
        return dates
    return pc.if_else(plain, pc.cast(pc.if_else(plain, column, pa.scalar(None, pa.string())), pa.date32()), dates)


def _as_utc_nanoseconds(column: pa.Array, plain: pa.Array) -> tuple[pa.Array, bool]:
    """ISO 8601 text (checked against _ISO) as UTC nanoseconds, and whether any value was a plain date.

    Plain dates are midnight UTC and datetimes without an offset are UTC, as pandas reads them with utc=True. A
    column's values nearly always share one form, which Arrow casts whole; only a mixed column has its values
    rewritten into one form first (a string kernel per form, together several times the cost of the cast).
    """
    has_plain = bool(pc.any(plain).as_py())
    if not has_plain and pc.all(pc.ends_with(column, "Z")).as_py():
        return pc.cast(column, _UTC_NANOSECONDS), False
    zoned = pc.match_substring_regex(column, _ZONED)
    if not has_plain and pc.all(zoned).as_py():
        return pc.cast(column, _UTC_NANOSECONDS), False
    if not has_plain and not pc.any(zoned).as_py():
        # Arrow reads a time without an offset as a naive timestamp, which is UTC once labelled so.
        return pc.cast(pc.cast(column, pa.timestamp("ns")), _UTC_NANOSECONDS), False
    text = pc.if_else(
        plain, pc.binary_join_element_wise(column, "T00:00:00Z", ""),
        pc.if_else(zoned, column, pc.binary_join_element_wise(column, "Z", "")),
    )
    return pc.cast(text, _UTC_NANOSECONDS), has_plain


def _parse_times_pandas(column: pa.Array, kind: str, timezone: str) -> tuple[pa.Array, np.ndarray]:
    """pandas' ISO 8601 reading of a whole column (the reference the Arrow path follows)."""
    text = pd.Series(column.to_pandas()).astype("string")
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = (text.notna() & parsed.isna()).to_numpy()
    if kind == "datetime":
        return pa.Array.from_pandas(parsed.astype("datetime64[us, UTC]"), type=TIMESTAMP), bad
    plain_date = text.str.len().eq(10).fillna(False).to_numpy()
    local = parsed.dt.tz_convert(timezone).dt.tz_localize(None)
    as_utc_date = parsed.dt.tz_localize(None)
    dates = pd.Series(np.where(plain_date, as_utc_date, local), index=text.index).astype("datetime64[us]")
    return pc.cast(pa.Array.from_pandas(dates.dt.normalize()), pa.date32()), bad


def _status_category(columns: dict[str, pa.Array], mapping: Mapping, n: int) -> pa.Array:
    spec = mapping.status_category
    # True and False are not the text of any status (the map's keys are text), so a boolean column maps nothing.
    if spec.map and not pa.types.is_boolean(columns[spec.from_].type):
        found = pc.index_in(_text(columns[spec.from_]), value_set=pa.array(list(spec.map), pa.string()))
        category = pc.take(pa.array(list(spec.map.values()), pa.string()), found)
    else:
        category = pa.nulls(n, pa.string())
    category = pc.fill_null(category, spec.default)
    for rule in reversed(spec.rules):
        category = pc.if_else(_test(columns, rule), rule.then, category)
    return category


def _any(columns: dict[str, pa.Array], conditions: list[Condition], n: int) -> pa.Array:
    result = pa.repeat(pa.scalar(False), n)
    for condition in conditions:
        result = pc.or_(result, _test(columns, condition))
    return result


def _test(columns: dict[str, pa.Array], c: Condition) -> pa.Array:
    """Where a condition holds, never null; the pandas rules of `_test_pandas` for columns Arrow does not cover."""
    column = columns[c.when]
    if c.is_null is not None:
        return pc.equal(column.is_null(), c.is_null)
    if c.is_true is not None and pa.types.is_boolean(column.type):
        return pc.equal(pc.fill_null(column, False), c.is_true)
    if c.contains is not None and _is_string_list(column):
        values = pc.list_flatten(column)
        rows = pc.filter(pc.list_parent_indices(column), pc.fill_null(pc.equal(values, c.contains), False))
        hits = np.zeros(len(column), dtype=bool)
        hits[rows.to_numpy(zero_copy_only=False)] = True
        return pa.array(hits)
    if c.is_true is None and c.contains is None and pa.types.is_string(column.type):
        values = [c.equals] if c.in_ is None else c.in_
        return pc.fill_null(pc.is_in(column, value_set=pa.array([str(v) for v in values], pa.string())), False)
    return pa.array(_test_pandas(_pandas_column(column), c).to_numpy(dtype=bool))


def _test_pandas(column: pd.Series, c: Condition) -> pd.Series:
    if c.is_true is not None:
        return column.fillna(False).astype(bool) == c.is_true
    if c.contains is not None:
        return column.map(lambda v: v is not None and not isinstance(v, float) and c.contains in list(v)).astype(bool)
    values = [c.equals] if c.in_ is None else c.in_
    return _as_text(column).isin([str(v) for v in values]) | column.isin(values)


def _pandas_column(column: pa.Array) -> pd.Series:
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    return pd.Series(column.to_pandas())


def _is_string_list(column: pa.Array) -> bool:
    return pa.types.is_list(column.type) and pa.types.is_string(column.type.value_type)


def _text(column: pa.Array) -> pa.Array:
    """Ids and keys as strings (Asana gids stay text; numbers that are ids lose no digits), nulls kept."""
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "True", "False")
    return pa.array([None if v is None else str(v) for v in _as_text(_pandas_column(column))], pa.string())


def _as_text(column: pd.Series) -> pd.Series:
    """`_text` for a pandas column: integral floats without their '.0', nulls kept."""
    if column.dtype.kind in "iu":
        return column.astype(str).astype(object)
    if column.dtype.kind == "f":
        text = column.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
        return text.astype(object)
    return column.astype(object).where(column.notna(), None)


def _labels(column: pa.Array) -> pa.Array:
    """Each task's labels as a sorted JSON list of strings ('[]' when it has none)."""
    if not _is_string_list(column):
        return pa.array([orjson.dumps(sorted(v) if v is not None else []).decode() for v in column.to_pylist()],
                        pa.string())
    values = pc.list_flatten(column)
    if values.null_count or pc.any(pc.match_substring_regex(values, r'["\\\x00-\x1f]')).as_py():
        # Text that JSON must escape (or a null label, which sorting refuses as it always has): one row at a time.
        return pa.array([orjson.dumps(sorted(v) if v is not None else []).decode() for v in column.to_pylist()],
                        pa.string())
    parents = pc.list_parent_indices(column)
    order = pc.sort_indices(pa.table({"row": parents, "label": values}),
                            sort_keys=[("row", "ascending"), ("label", "ascending")])
    quoted = pc.binary_join_element_wise('"', pc.take(values, order), '"', "")
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), quoted), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """The rows as the frames pandas code expects: text as objects with None, dates as naive midnights."""
    columns = {}
    for name in table.column_names:
        column = _single(table.column(name))
        if pa.types.is_string(column.type):
            columns[name] = pd.Series(column.to_pylist(), dtype=object)
        elif pa.types.is_date(column.type):
            columns[name] = pd.Series(pc.cast(column, pa.timestamp("us")).to_pandas(), dtype="datetime64[us]")
        else:
            columns[name] = pd.Series(column.to_pandas())
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


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

