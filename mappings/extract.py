"""Pull typed columns out of a page of raw vendor records, vectorized.

A page of nested records is read against an Arrow struct type built from the mapping's paths (everything else in
the records is skipped). Arrow's conversion from Python objects reads it directly when every value has the JSON
type its path promises (one quick pass over the mapped objects checks the few places where that conversion is
laxer than JSON); otherwise the page is re-encoded once with orjson and parsed by Arrow's C++ JSON reader, whose
rules are the reference. A record whose value has the wrong JSON type fails the whole page there, so the page is
bisected to find the bad records, which are returned with the reason for quarantine while the rest still load.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "date": pa.string(),
    "datetime": pa.string(),
    "number": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string_list": pa.list_(pa.string()),
    "id_list": pa.list_(pa.string()),
}


@dataclass(frozen=True)
class Rejected:
    """A record that could not be read, with its position in the page and why."""

    position: int
    reason: str


def arrow_struct(paths: dict[str, tuple[str, str]]) -> pa.StructType:
    """A nested Arrow struct type holding every dotted path: {column: (path, type)} -> struct<...>."""
    return _to_struct(_path_tree(paths))


def _path_tree(paths: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The paths as nested dicts: {part: {part: type}}."""
    tree: dict[str, Any] = {}
    for path, kind in paths.values():
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"path {path!r} goes through {part!r}, which another path reads as a value")
            node = child
        existing = node.get(parts[-1])
        if isinstance(existing, dict):
            raise ValueError(f"path {path!r} reads {parts[-1]!r} as a value but another path goes inside it")
        if existing is not None and existing != kind:
            raise ValueError(f"path {path!r} is read as both {existing} and {kind}")
        node[parts[-1]] = kind
    return tree


def _to_struct(tree: dict[str, Any]) -> pa.StructType:
    return pa.struct(
        [pa.field(name, _to_struct(sub) if isinstance(sub, dict) else ARROW_TYPES[sub]) for name, sub in tree.items()]
    )


def extract(records: Sequence[dict[str, Any]], paths: dict[str, tuple[str, str]]) -> tuple[pa.Table, list[Rejected]]:
    """Columns {name: values} read at each dotted path of every record, plus the records that could not be read.

    The returned table has one row per readable record, in page order, and a `_position` column giving each
    row's position in the page.
    """
    tree = _path_tree(paths)
    struct = _to_struct(tree)
    records = list(records)
    rejected: list[Rejected] = []
    chunks: list[pa.StructArray] = []
    positions: list[pa.Array] = []
    converted = _convert(records, struct, _lax_steps(tree))
    if converted is not None:
        chunks.append(converted)
        positions.append(pa.array(np.arange(len(records), dtype=np.int64)))
    else:
        _read(records, 0, struct, chunks, positions, rejected)
    if chunks:
        values = pa.concat_arrays(chunks)
        position = pa.concat_arrays(positions)
    else:
        values = pa.array([], type=struct)
        position = pa.array([], type=pa.int64())
    columns = {name: _column(values, path) for name, (path, _) in paths.items()}
    columns["_position"] = position
    return pa.table(columns), sorted(rejected, key=lambda r: r.position)


# Arrow's conversion from Python objects reads only the mapped fields, several times faster than re-encoding the
# records and parsing them back, but it is laxer than the JSON reader in a few places: it takes a list or tuple
# for an object, True for a number, 2.5 for an integer, and a string for a list of strings (NaN and infinity,
# which orjson writes as null, it keeps). A page holding any of those is read by the JSON reader, whose rules
# (and error messages, for quarantine) are the reference; elsewhere the two give the same columns.
_LAX = ("object", "number", "integer", "string_list", "id_list")


def _lax_steps(tree: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(slot of the parent value, key, kind) for every object and every lax leaf, parents first; a record's
    values are held in slots as they are looked up, slot 0 being the record itself."""
    steps: list[tuple[int, str, str]] = []

    def walk(node: dict[str, Any], parent: int) -> None:
        for key, sub in node.items():
            if isinstance(sub, dict):
                steps.append((parent, key, "object"))
                walk(sub, len(steps))
            elif sub in _LAX:
                steps.append((parent, key, sub))

    walk(tree, 0)
    return steps


def _convert(records: list[Any], struct: pa.StructType, steps: list[tuple[int, str, str]]) -> pa.StructArray | None:
    """The page read by Arrow's conversion from Python objects, or None where the JSON reader must read it."""
    for record in records:
        if type(record) is not dict:
            return None
        values: list[Any] = [record]
        for parent, key, kind in steps:
            holder = values[parent]
            value = holder.get(key) if holder is not None else None
            if value is not None:
                kind_of = type(value)
                if kind == "object":
                    if kind_of is not dict:
                        return None
                elif kind == "number":
                    if kind_of is not int and not (kind_of is float and math.isfinite(value)):
                        return None
                elif kind == "integer":
                    if kind_of is not int:
                        return None
                elif kind_of is not list:
                    return None
            values.append(value)
    try:
        return pa.array(records, type=struct)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return None


def _read(
    records: list[dict[str, Any]], offset: int, struct: pa.StructType, chunks: list, positions: list,
    rejected: list[Rejected],
) -> None:
    if not records:
        return
    try:
        chunks.append(_parse(records, struct))
        positions.append(pa.array(range(offset, offset + len(records)), type=pa.int64()))
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        if len(records) == 1:
            rejected.append(Rejected(offset, _reason(exc)))
            return
    half = len(records) // 2
    _read(records[:half], offset, struct, chunks, positions, rejected)
    _read(records[half:], offset + half, struct, chunks, positions, rejected)


def _parse(records: list[dict[str, Any]], struct: pa.StructType) -> pa.StructArray:
    if any(not isinstance(r, dict) for r in records):
        raise TypeError("the record is not a JSON object")
    body = orjson.dumps({"rows": records}, option=orjson.OPT_NON_STR_KEYS)
    schema = pa.schema([pa.field("rows", pa.list_(struct))])
    table = pajson.read_json(
        io.BytesIO(body),
        read_options=pajson.ReadOptions(block_size=len(body) + 64, use_threads=False),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    rows = table.column("rows").combine_chunks()
    return rows.values if len(rows) else pa.array([], type=struct)


def _column(values: pa.StructArray, path: str) -> pa.Array:
    """The values at a dotted path; null wherever any parent on the way is null."""
    array: pa.Array = values
    for part in path.split("."):
        array = pc.struct_field(array, part)
    return array


_TYPE_CHANGE = re.compile(r"Column\(/rows/\[\]/(?P<path>[^)]*)\) changed from (?P<want>\w+) to (?P<got>\w+)")


def _reason(exc: Exception) -> str:
    """One sentence saying which field was wrong and how, from Arrow's error."""
    text = str(exc).split("\n")[0]
    match = _TYPE_CHANGE.search(text)
    if match:
        path = match["path"].replace("/[]", "[]").replace("/", ".")
        return f"{path} should be a {match['want']} but is a {match['got']}"
    converted = re.search(r"Could not convert (?P<value>.*?) with type (?P<got>\w+): tried to convert to (?P<want>\w+)", text)
    if converted:
        return f"value {converted['value']} is a {converted['got']} where a {converted['want']} is expected"
    return text
