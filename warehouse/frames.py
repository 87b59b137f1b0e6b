"""Conversions between pandas frames and the canonical schema's logical types, whole columns at a time."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mappings.schema import BOOLEAN, DATE, FLOAT, INTEGER, JSON, STRING, TIMESTAMP, Table

ARROW_TYPES = {
    STRING: pa.string(),
    DATE: pa.date32(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
    BOOLEAN: pa.bool_(),
    INTEGER: pa.int64(),
    FLOAT: pa.float64(),
    JSON: pa.string(),
}


def check_columns(table: Table, frame: pd.DataFrame) -> list[str]:
    """The frame's columns in table order; ValueError naming any column the table does not define."""
    unknown = [name for name in frame.columns if name not in table.column_names]
    if unknown:
        raise ValueError(f"table {table.name} has no columns {unknown}; it has {list(table.column_names)}")
    return [name for name in table.column_names if name in frame.columns]


def to_arrow(table: Table, frame: pd.DataFrame) -> pa.Table:
    """The frame's columns (a subset of the table's) as an Arrow table typed by the canonical schema."""
    names = check_columns(table, frame)
    arrays = [_to_arrow_array(frame[name], table.column(name).type) for name in names]
    return pa.Table.from_arrays(arrays, names=names)


def arrow_table(table: Table, data: pa.Table) -> pa.Table:
    """An Arrow table's columns (a subset of the table's) in table order, cast to the canonical schema's types."""
    unknown = [name for name in data.column_names if name not in table.column_names]
    if unknown:
        raise ValueError(f"table {table.name} has no columns {unknown}; it has {list(table.column_names)}")
    names = [name for name in table.column_names if name in data.column_names]
    arrays = []
    for name in names:
        column = data.column(name)
        logical = table.column(name).type
        wanted = ARROW_TYPES[logical]
        if logical == JSON and (pa.types.is_nested(column.type) or pa.types.is_null(column.type)):
            # Lists and objects become their JSON text, as json_text does for frames.
            column = pa.array([None if value is None else _dumps(value) for value in column.to_pylist()], wanted)
        arrays.append(column if column.type == wanted else column.cast(wanted))
    return pa.Table.from_arrays(arrays, names=names)


def empty_arrow(table: Table) -> pa.Table:
    """An Arrow table of the table's columns and types, with no rows."""
    return pa.table({column.name: pa.array([], ARROW_TYPES[column.type]) for column in table.columns})


def last_per_key(data: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """The rows with the last row of each key only (the table unchanged, and uncopied, when no key repeats)."""
    if data.num_rows < 2:
        return data
    if len(keys) == 1:
        distinct = pc.count_distinct(data.column(keys[0])).as_py()
    else:
        distinct = data.select(list(keys)).group_by(list(keys), use_threads=False).aggregate([]).num_rows
    if distinct == data.num_rows:
        return data
    numbered = data.select(list(keys)).append_column("_row", pa.array(np.arange(data.num_rows)))
    last = numbered.group_by(list(keys), use_threads=False).aggregate([("_row", "max")]).column("_row_max")
    return data.take(np.sort(last.to_numpy()))


def _to_arrow_array(values: pd.Series, logical_type: str) -> pa.Array:
    values = values.reset_index(drop=True)
    if logical_type == DATE:
        values = _as_dates(values)
    elif logical_type == TIMESTAMP:
        values = pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    elif logical_type == BOOLEAN:
        values = values.astype("boolean")
    elif logical_type == INTEGER:
        values = pd.to_numeric(values).astype("Int64")
    elif logical_type == FLOAT:
        values = pd.to_numeric(values).astype("float64")
    elif logical_type == JSON:
        values = json_text(values)
    elif logical_type == STRING:
        values = values.astype("str")
    return pa.Array.from_pandas(values, type=ARROW_TYPES[logical_type])


def _as_dates(values: pd.Series) -> pd.Series:
    if values.dtype == object:
        values = pd.to_datetime(values, format="ISO8601")
    else:
        values = pd.to_datetime(values)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_localize(None)
    return values.dt.normalize().astype("datetime64[s]")


def json_text(values: pd.Series) -> pd.Series:
    """JSON text for every value: strings are taken as JSON already; dicts, lists and scalars are serialized."""
    if values.dtype != object:
        return values.astype("str")
    needs_dumping = values.map(
        lambda value: value is not None and not isinstance(value, str) and _not_nan(value)
    )
    if not needs_dumping.any():
        return values.astype("str")
    dumped = values.where(~needs_dumping, values[needs_dumping].map(_dumps))
    return dumped.astype("str")


def _not_nan(value: object) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def payload_digest(payload: object) -> str:
    """A stable id for a record whose own id cannot be read: `sha1:` and the digest of its JSON text."""
    text = payload if isinstance(payload, str) else _dumps(payload)
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()


def coerce(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every known column cast to the schema's pandas dtype; other columns left as they are."""
    dtypes = table.pandas_dtypes()
    columns = {}
    for name in frame.columns:
        column = frame[name]
        if name in dtypes:
            column = _coerce_column(column, table.column(name).type, dtypes[name])
        columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


def _coerce_column(values: pd.Series, logical_type: str, dtype: str) -> pd.Series:
    if logical_type == DATE:
        return _as_dates(values).astype(dtype)
    if logical_type == TIMESTAMP:
        return pd.to_datetime(values, utc=True, format="ISO8601").astype(dtype)
    if logical_type in (INTEGER, FLOAT):
        return pd.to_numeric(values).astype(dtype)
    if logical_type == JSON:
        return json_text(values)
    return values.astype(dtype)


def empty_frame(table: Table) -> pd.DataFrame:
    """A frame with no rows and every column of the table at its schema dtype."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in table.pandas_dtypes().items()})
