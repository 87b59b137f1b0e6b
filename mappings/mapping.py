"""Per-tool mappings: which native field holds what, and how native statuses fall into categories.

A mapping is a YAML file beside this module (`jira.yaml`, `asana.yaml`, ...). It is validated when loaded, and
every error names the file, the key and the fix. A connection may override single fields (a Jira site whose
start date lives in another custom field) without copying the file.
"""
from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAPPINGS_DIR = Path(__file__).resolve().parent
FieldType = Literal["string", "date", "datetime", "number", "integer", "boolean", "string_list", "id_list"]

# Canonical task fields a mapping may fill, and the type each must be read as.
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "native_id": ("string", "integer"),
    "key": ("string", "integer"),
    "url": ("string",),
    "project_native_id": ("string", "integer"),
    "parent_native_id": ("string", "integer"),
    "title": ("string",),
    "status": ("string", "integer", "boolean"),
    "assignee": ("string",),
    "assignee_native_id": ("string",),
    "assignee_email": ("string",),
    "start_date": ("date", "datetime"),
    "due_date": ("date", "datetime"),
    "completed_at": ("datetime",),
    "created_at": ("datetime",),
    "updated_at": ("datetime",),
    "estimate_hours": ("number", "integer"),
    "percent_complete": ("number", "integer"),
    "labels": ("string_list",),
    "story_points": ("number", "integer"),
}
REQUIRED_FIELDS = ("native_id", "title")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(Strict):
    """Where a value sits in the raw record (a dotted path) and how to read it."""

    path: str
    type: FieldType = "string"
    scale: float | None = Field(None, description="multiply numbers by this (e.g. seconds to hours)")


class Condition(Strict):
    """A test on one extracted column (a canonical field or an `aux` field)."""

    when: str
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    contains: str | None = None
    is_true: bool | None = None
    is_null: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = [self.equals is not None, self.in_ is not None, self.contains is not None, self.is_true is not None,
                 self.is_null is not None]
        if sum(tests) != 1:
            raise ValueError("give exactly one of equals, in, contains, is_true, is_null")
        return self


class CategoryRule(Condition):
    then: Literal["todo", "in_progress", "done", "cancelled"]


class StatusCategorySpec(Strict):
    """Native status to category: rules first (first match wins), then the `map` of `from`'s values, then default."""

    from_: str = Field(alias="from")
    map: dict[str, Literal["todo", "in_progress", "done", "cancelled"]] = {}
    rules: list[CategoryRule] = []
    default: Literal["todo", "in_progress", "done", "cancelled"] = "todo"


class MilestoneSpec(Strict):
    any: list[Condition] = []


class Mapping(Strict):
    """One tool's mapping from raw records to canonical task rows."""

    tool: Literal["jira", "asana", "trello", "planner", "msproject"]
    date_timezone: str | None = Field(None, description="zone to read datetimes as dates in; default the config's")
    fields: dict[str, FieldSpec]
    aux: dict[str, FieldSpec] = {}
    status_category: StatusCategorySpec
    is_milestone: MilestoneSpec = MilestoneSpec()

    @model_validator(mode="after")
    def _known_fields(self) -> Mapping:
        for name, spec in self.fields.items():
            if name not in TASK_FIELDS:
                raise ValueError(_unknown(f"fields.{name}", name, TASK_FIELDS))
            if spec.type not in TASK_FIELDS[name]:
                raise ValueError(f"fields.{name} is read as {spec.type}; use type {' or '.join(TASK_FIELDS[name])}")
        for required in REQUIRED_FIELDS:
            if required not in self.fields:
                raise ValueError(f"fields.{required} is missing; every mapping must say where the {required} is")
        columns = set(self.fields) | set(self.aux)
        conditions = [*self.status_category.rules, *self.is_milestone.any]
        for name in [self.status_category.from_, *(c.when for c in conditions)]:
            if name not in columns:
                raise ValueError(_unknown(f"column {name!r}", name, columns) + " (declare it under fields or aux)")
        return self

    def paths(self) -> dict[str, tuple[str, str]]:
        """{column: (path, type)} of everything to extract from a raw record."""
        return {name: (spec.path, spec.type) for name, spec in {**self.aux, **self.fields}.items()}

    def with_overrides(self, overrides: dict[str, str]) -> Mapping:
        """The mapping with some fields read from other paths: {canonical field: dotted path}."""
        if not overrides:
            return self
        fields = dict(self.fields)
        for name, path in overrides.items():
            if name not in TASK_FIELDS:
                raise ValueError(_unknown(f"field override {name!r}", name, TASK_FIELDS))
            base = fields.get(name) or FieldSpec(path=path, type=TASK_FIELDS[name][0])
            fields[name] = base.model_copy(update={"path": path})
        return self.model_copy(update={"fields": fields})


def _unknown(what: str, name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"{what} is not known{hint}"


class MappingError(ValueError):
    """A mapping file is wrong: the message names the file, the key and the fix."""


@cache
def load_mapping(tool: str, directory: Path = MAPPINGS_DIR) -> Mapping:
    """The mapping of one tool, read from `<tool>.yaml` and validated; MappingError names the file, key and fix."""
    path = directory / f"{tool}.yaml"
    return load_mapping_file(path)


def load_mapping_file(path: Path) -> Mapping:
    """Read and validate one mapping file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MappingError(f"{path}: no such mapping file; tools with mappings are "
                           f"{', '.join(sorted(p.stem for p in path.parent.glob('*.yaml')))}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MappingError(f"{path}: the YAML does not parse{where}; fix the syntax there") from None
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "this key is not known; remove it or check its spelling"
        raise MappingError(f"{path}: {key}: {message}") from None

