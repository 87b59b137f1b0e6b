"""Check HTTP exchanges with the vendor emulators against the vendors' own OpenAPI descriptions.

The specs live in ``../shared/specs`` (never copied into the project). Each is loaded once per process and
repaired in memory for the quirks listed in its SOURCES.md (and a few more found here, see ``_repair_*``).
Every (operation, status, media type) gets one compiled JSON Schema validator with OpenAPI 3.0 semantics
(``nullable``, ``readOnly``/``writeOnly``, additional properties allowed unless forbidden, unknown formats
ignored), so checking one exchange takes milliseconds once the spec is loaded.

Paths are given as sent, with the vendor prefix: ``/rest/api/2/...`` or ``/rest/api/3/...`` (Jira; v2 is
checked against the v3 shapes), ``/api/1.0/...`` (Asana), ``/1/...`` (Trello), ``/v1.0/...`` (Graph).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
import pytest
import yaml
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPECS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "specs"
VENDORS = ("jira", "asana", "trello", "graph")

_SPEC_FILES = {
    "jira": "jira-platform-v3.json",
    "asana": "asana.yaml",
    "trello": "trello.json",
    "graph": "graph-planner-v1.0.yaml",
}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
# OpenAPI says header parameters with these names are ignored; the transport sets them.
_TRANSPORT_HEADERS = frozenset({"accept", "content-type", "authorization"})
_MAX_ERRORS_PER_BODY = 20
_MAX_DETAIL_CHARS = 240

_TRELLO_SINGULAR_ALIASES = {
    "action": "actions",
    "board": "boards",
    "card": "cards",
    "checklist": "checklists",
    "label": "labels",
    "list": "lists",
    "member": "members",
    "notification": "notifications",
    "organization": "organizations",
    "token": "tokens",
    "webhook": "webhooks",
}


def _array_of(component: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{component}"}}


# Trello describes no response body for these reads the sync depends on; their shapes are the documented ones.
_TRELLO_UNDESCRIBED_RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/boards/{id}/cards"): _array_of("Card"),
    ("get", "/boards/{id}/cards/{filter}"): _array_of("Card"),
    ("get", "/boards/{id}/checklists"): _array_of("Checklist"),
    ("get", "/boards/{id}/labels"): _array_of("Label"),
    ("get", "/boards/{id}/members"): _array_of("Member"),
    ("get", "/boards/{boardId}/actions"): _array_of("Action"),
    ("get", "/cards/{id}/checklists"): _array_of("Checklist"),
    ("get", "/lists/{id}"): {"$ref": "#/components/schemas/TrelloList"},
    ("get", "/checklists/{id}"): {"$ref": "#/components/schemas/Checklist"},
}


def require_specs() -> None:
    """Skip the calling test when ../shared/specs is not there (a user's checkout has no shared folder)."""
    if not SPECS_DIR.is_dir():
        pytest.skip(
            "../shared/specs is absent (as on a user's machine); contract tests need the vendors' OpenAPI files"
        )


# --- loading and repairing ------------------------------------------------------------------------------------


@functools.cache
def load_spec(vendor: str) -> dict[str, Any]:
    """The vendor's OpenAPI document, parsed once per process and repaired in memory; callers must not mutate it."""
    if vendor not in _SPEC_FILES:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}")
    spec = _read_document(SPECS_DIR / _SPEC_FILES[vendor])
    _stringify_response_codes(spec)
    _walk_schemas(spec, functools.partial(_repair_schema, vendor))
    if vendor == "trello":
        _repair_trello(spec)
    return spec


def _read_document(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if path.suffix == ".json":
        return orjson.loads(raw)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(raw, Loader=loader)


def _stringify_response_codes(spec: dict[str, Any]) -> None:
    # Asana writes `200:` unquoted, so YAML hands back integer keys.
    for path_item in spec["paths"].values():
        for method in _HTTP_METHODS:
            operation = path_item.get(method)
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"] = {
                    str(code): response for code, response in operation["responses"].items()
                }


def _walk_schemas(node: Any, repair: Any) -> None:
    """Apply ``repair`` to every object in the document except examples (which are data, not schemas)."""
    stack: list[tuple[Any, str]] = [(node, "")]
    while stack:
        current, parent_key = stack.pop()
        if isinstance(current, dict):
            if parent_key != "properties":
                repair(current)
            stack.extend(
                (value, key)
                for key, value in current.items()
                if parent_key == "properties" or key not in ("example", "examples")
            )
        elif isinstance(current, list):
            stack.extend((item, parent_key) for item in current)


def _repair_schema(vendor: str, node: dict[str, Any]) -> None:
    _parse_string_example(node)
    _repair_nullable(node)
    if isinstance(node.get("$ref"), str) and len(node) > 1:
        # OpenAPI 3.0 ignores a $ref's siblings; Trello's `{"type": "string", "$ref": Color}` would refuse null.
        reference = node["$ref"]
        node.clear()
        node["$ref"] = reference
    if vendor == "trello" and node.get("format") == "date" and node.get("type") == "string":
        # Trello labels full timestamps (Card.due, Board.dateLastActivity) as `date`; its examples are date-times.
        node["format"] = "date-time"
    if vendor == "graph" and node.get("additionalProperties") == {"type": "object"}:
        # Graph marks open types this way, which would reject the string `@odata.etag` / `@odata.context`.
        del node["additionalProperties"]


def _parse_string_example(node: dict[str, Any]) -> None:
    # Jira stores most media-type examples as JSON text rather than as the object itself.
    example = node.get("example")
    if "schema" in node and isinstance(example, str) and example[:1] in ("{", "["):
        try:
            node["example"] = orjson.loads(example)
        except orjson.JSONDecodeError:
            pass


def _repair_nullable(node: dict[str, Any]) -> None:
    """Make ``nullable: true`` admit null even where the schema also composes, refers or enumerates."""
    for branch in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
        # Asana writes a nullable reference as allOf [{$ref}, {nullable: true}] and means the whole may be null.
        if isinstance(branch, dict) and branch.get("nullable") is True:
            del branch["nullable"]
            node["nullable"] = True
    if node.get("nullable") is not True:
        return
    if {"$ref", "allOf", "anyOf", "oneOf", "not"} & node.keys():
        inner = {key: value for key, value in node.items() if key != "nullable"}
        flags = {key: node[key] for key in ("readOnly", "writeOnly") if key in node}
        node.clear()
        node.update(flags, anyOf=[{"enum": [None]}, inner])
    elif "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]


def _repair_trello(spec: dict[str, Any]) -> None:
    # Trello's Card says labels are ids; the API (and py-trello) return label objects, as idChecklists allows.
    card_labels = spec["components"]["schemas"]["Card"]["properties"]["labels"]
    card_labels["items"] = {
        "oneOf": [{"$ref": "#/components/schemas/Label"}, {"$ref": "#/components/schemas/TrelloID"}]
    }
    for (method, template), schema in _TRELLO_UNDESCRIBED_RESPONSES.items():
        response = spec["paths"][template][method]["responses"]["200"]
        if "content" not in response and "$ref" not in response:
            response["content"] = {"application/json": {"schema": schema}}


# --- exchanges --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One HTTP request and its response, as seen on the wire (path with the vendor prefix, no host)."""

    method: str
    path: str
    query: Mapping[str, Any] | Sequence[tuple[str, str]] = field(default_factory=dict)
    request_headers: Mapping[str, str] | Sequence[tuple[str, str]] = field(default_factory=dict)
    request_body: bytes | Any = None
    status: int
    response_headers: Mapping[str, str] | Sequence[tuple[str, str]] = field(default_factory=dict)
    response_body: bytes = b""

    @classmethod
    def from_recorded(cls, recorded: Any) -> Exchange:
        """The exchange an emulator recorded (`sandbox.core.Recorded`)."""
        return cls(
            method=recorded.method, path=recorded.path, query=parse_qsl(recorded.query, keep_blank_values=True),
            request_headers=recorded.request_headers, request_body=recorded.request_body or None,
            status=recorded.status, response_headers=recorded.response_headers,
            response_body=recorded.response_body,
        )

    @classmethod
    def from_httpx(cls, response: Any) -> Exchange:
        """The exchange behind an ``httpx.Response`` (also what Starlette's TestClient returns)."""
        request = response.request
        try:
            request_body = request.content
        except Exception:  # noqa: BLE001 - a streamed request body was never read, so there is nothing to check
            request_body = None
        return cls(
            method=request.method,
            path=request.url.path,
            query=list(request.url.params.multi_items()),
            request_headers=list(request.headers.items()),
            request_body=request_body or None,
            status=response.status_code,
            response_headers=list(response.headers.items()),
            response_body=response.content,
        )

    @classmethod
    def from_requests(cls, response: Any) -> Exchange:
        """The exchange behind a ``requests.Response`` (what the jira and py-trello SDKs use)."""
        request = response.request
        url = urlsplit(request.url)
        body = request.body
        return cls(
            method=request.method,
            path=url.path,
            query=parse_qsl(url.query, keep_blank_values=True),
            request_headers=list(request.headers.items()),
            request_body=body.encode() if isinstance(body, str) else body,
            status=response.status_code,
            response_headers=list(response.headers.items()),
            response_body=response.content,
        )


# --- routing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pointer: str
    definition: dict[str, Any]
    path_item: dict[str, Any]


@dataclass(frozen=True)
class _Route:
    template: str
    segments: tuple[str | re.Pattern[str], ...]
    specificity: tuple[bool, ...]

    def matches(self, segments: Sequence[str]) -> bool:
        return all(
            expected == actual if isinstance(expected, str) else expected.fullmatch(actual) is not None
            for expected, actual in zip(self.segments, segments, strict=True)
        )


def _compile_segment(segment: str) -> str | re.Pattern[str]:
    if "{" not in segment:
        return segment
    parts = re.split(r"(\{[^}]+\})", segment)
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts))


@functools.cache
def _routes(vendor: str) -> dict[int, list[_Route]]:
    routes: dict[int, list[_Route]] = {}
    for template in load_spec(vendor)["paths"]:
        segments = tuple(_compile_segment(segment) for segment in template.split("/")[1:])
        route = _Route(template, segments, tuple(isinstance(segment, str) for segment in segments))
        routes.setdefault(len(segments), []).append(route)
    return routes


def _spec_path(vendor: str, path: str) -> str | None:
    """The path as the spec writes it (prefix handled, aliases resolved), or None outside the vendor's API."""
    path = path.split("?", 1)[0]
    if vendor == "jira":
        found = re.fullmatch(r"/rest/api/[23](/.*)", path)
        return f"/rest/api/3{found.group(1)}" if found else None
    if vendor == "trello":
        path = re.sub(r"/{2,}", "/", path)
    prefix = {"asana": "/api/1.0", "trello": "/1", "graph": "/v1.0"}[vendor]
    if not path.startswith(prefix + "/"):
        return None
    path = path[len(prefix) :]
    if vendor == "trello":
        first, _, rest = path[1:].partition("/")
        path = (
            "/"
            + _TRELLO_SINGULAR_ALIASES.get(first, first)
            + ("/" + rest if rest or path.endswith("/") else "")
        )
    return path


def _candidate_templates(vendor: str, spec_path: str) -> list[str]:
    variants = [spec_path]
    if spec_path.endswith("/") and len(spec_path) > 1:
        variants.append(spec_path.rstrip("/"))
    else:
        variants.append(spec_path + "/")
    for variant in variants:
        segments = variant.split("/")[1:]
        matching = [route for route in _routes(vendor).get(len(segments), []) if route.matches(segments)]
        if matching:
            matching.sort(key=lambda route: route.specificity, reverse=True)
            return [route.template for route in matching]
    return []


def _find_operation(vendor: str, method: str, path: str) -> _Operation | str:
    """The spec's operation for this request, or the reason there is none."""
    spec_path = _spec_path(vendor, path)
    if spec_path is None:
        return "operation not in spec (path is outside the vendor's API prefix)"
    templates = _candidate_templates(vendor, spec_path)
    if not templates:
        return "operation not in spec (no path template matches)"
    paths = load_spec(vendor)["paths"]
    for template in templates:
        definition = paths[template].get(method.lower())
        if isinstance(definition, dict):
            pointer = f"/paths/{_escape_pointer(template)}/{method.lower()}"
            return _Operation(method.upper(), template, pointer, definition, paths[template])
    declared = sorted({m.upper() for template in templates for m in _HTTP_METHODS if m in paths[template]})
    return f"operation not in spec ({templates[0]} declares only {', '.join(declared)})"


def _escape_pointer(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def operations(vendor: str) -> list[tuple[str, str]]:
    """Every (METHOD, path template) the vendor's spec declares, templates as the spec writes them."""
    paths = load_spec(vendor)["paths"]
    return sorted(
        (method.upper(), template)
        for template, path_item in paths.items()
        for method in _HTTP_METHODS
        if isinstance(path_item.get(method), dict)
    )


def match_operation(vendor: str, method: str, path: str) -> tuple[str, str] | None:
    """The (METHOD, path template) of the spec that a request sent to ``path`` exercises, or None."""
    operation = _find_operation(vendor, method, path)
    return None if isinstance(operation, str) else (operation.method, operation.template)


# --- validation -------------------------------------------------------------------------------------------------


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("int32")
def _is_int32(instance: object) -> bool:
    return not isinstance(instance, int) or -(2**31) <= instance < 2**31


@_FORMATS.checks("int64")
def _is_int64(instance: object) -> bool:
    return not isinstance(instance, int) or -(2**63) <= instance < 2**63


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    # ISO 8601 as Python 3.11 reads it, so Jira's `+0000` offsets pass as they do for its SDK.
    if not isinstance(instance, str):
        return True
    datetime.fromisoformat(instance)
    return len(instance) > 10


@_FORMATS.checks("date", raises=ValueError)
def _is_date(instance: object) -> bool:
    if isinstance(instance, str):
        date.fromisoformat(instance)
    return True


@_FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(instance: object) -> bool:
    if isinstance(instance, str):
        uuid.UUID(instance)
    return True


@functools.cache
def _registry(vendor: str) -> Registry:
    return Registry().with_resource(_spec_uri(vendor), DRAFT4.create_resource(load_spec(vendor)))


def _spec_uri(vendor: str) -> str:
    return f"https://pmsync.invalid/specs/{vendor}.json"


@functools.cache
def _validator(vendor: str, pointer: str, direction: str) -> Any:
    """One compiled validator per schema location; responses read, requests write (readOnly/writeOnly rules)."""
    validator_class = OAS30ReadValidator if direction == "response" else OAS30WriteValidator
    reference = f"{_spec_uri(vendor)}#{quote(pointer, safe='/~')}"
    return validator_class({"$ref": reference}, registry=_registry(vendor), format_checker=_FORMATS)


def _resolve(vendor: str, node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """Follow local ``$ref``s of responses, request bodies and parameters to the object and its pointer."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        pointer = node["$ref"][1:]
        node = load_spec(vendor)
        for segment in pointer[1:].split("/"):
            node = node[segment.replace("~1", "/").replace("~0", "~")]
    return node, pointer


def _header_map(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {name.lower(): value for name, value in pairs}


def _query_names(query: Mapping[str, Any] | Sequence[tuple[str, str]]) -> set[str]:
    return set(query.keys()) if isinstance(query, Mapping) else {name for name, _ in query}


def _media_type(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


def _is_json_media(media_type: str | None) -> bool:
    return media_type is not None and (media_type == "application/json" or media_type.endswith("+json"))


def validate_exchange(vendor: str, exchange: Exchange) -> list[str]:
    """Every way ``exchange`` departs from the vendor's spec, one readable line each; empty when it conforms.

    Checked: the operation exists; required query and header parameters are sent; a JSON write's body matches
    the declared requestBody; the response status is declared (undeclared 4xx/5xx are tolerated, vendors do
    not document every error) and the JSON body matches the schema for that status, falling back to ``NXX``
    then ``default`` (for Trello, any 2xx uses the ``200`` schema).
    """
    where = f"{exchange.method.upper()} {exchange.path} -> {exchange.status}"
    operation = _find_operation(vendor, exchange.method, exchange.path)
    if isinstance(operation, str):
        return [f"{where}: {operation}"]
    problems = [
        *_parameter_problems(vendor, operation, exchange),
        *_request_body_problems(vendor, operation, exchange),
        *_response_problems(vendor, operation, exchange),
    ]
    return [f"{where}: {problem}" for problem in problems]


def _parameter_problems(vendor: str, operation: _Operation, exchange: Exchange) -> Iterator[str]:
    sent = {"query": _query_names(exchange.query), "header": set(_header_map(exchange.request_headers))}
    if vendor == "trello":
        # Trello reads its "query" parameters from a JSON body too, which is how py-trello sends writes.
        body = _parse_json(exchange.request_body) if exchange.request_body else None
        sent["query"] |= set(body) if isinstance(body, dict) else set()
    declared = [*operation.path_item.get("parameters", []), *operation.definition.get("parameters", [])]
    for parameter in declared:
        parameter, _ = _resolve(vendor, parameter, "")
        location, name = parameter.get("in"), parameter.get("name", "")
        if not parameter.get("required") or location not in sent or name.lower() in _TRANSPORT_HEADERS:
            continue
        if (name.lower() if location == "header" else name) not in sent[location]:
            yield f"request lacks required {location} parameter {name!r}"


def _request_body_problems(vendor: str, operation: _Operation, exchange: Exchange) -> Iterator[str]:
    if operation.method not in _WRITE_METHODS or "requestBody" not in operation.definition:
        return
    request_body, pointer = _resolve(
        vendor, operation.definition["requestBody"], operation.pointer + "/requestBody"
    )
    body = exchange.request_body
    if body in (None, b"", ""):
        if request_body.get("required"):
            yield "request has no body; the spec requires one"
        return
    content_type = _media_type(_header_map(exchange.request_headers).get("content-type"))
    if not isinstance(body, (bytes, str)):
        content_type = content_type or "application/json"
    if content_type is not None and not _is_json_media(content_type):
        return
    content = request_body.get("content", {})
    declared = next((media for media in content if _is_json_media(_media_type(media))), None)
    if declared is None:
        if content and "*/*" not in content:
            yield f"request body is JSON; the spec accepts only {', '.join(sorted(content))}"
        return
    parsed = _parse_json(body)
    if isinstance(parsed, _NotJson):
        yield f"request body is not JSON: {parsed.reason}"
        return
    if "schema" in content[declared]:
        schema_pointer = f"{pointer}/content/{_escape_pointer(declared)}/schema"
        yield from _schema_problems(vendor, schema_pointer, "request", parsed, "request body")


def _response_problems(vendor: str, operation: _Operation, exchange: Exchange) -> Iterator[str]:
    declared = _declared_response(vendor, operation, exchange.status)
    if isinstance(declared, str):
        yield declared
        return
    if declared is None:
        return
    response, pointer = declared
    content = response.get("content") or {}
    if not content or (exchange.status == 204 and not exchange.response_body):
        return
    yield from _response_body_problems(vendor, exchange, content, pointer)


def _declared_response(
    vendor: str, operation: _Operation, status: int
) -> tuple[dict[str, Any], str] | str | None:
    """The response object the spec declares for ``status``, a problem line, or None when nothing applies."""
    responses = operation.definition.get("responses", {})
    success = 200 <= status < 300
    keys = [str(status), f"{status // 100}XX"]
    if vendor == "trello" and success:
        keys.append("200")
    declared_success = [code for code in responses if code.startswith("2")]
    if not (success and declared_success):
        keys.append("default")
    for key in keys:
        if key in responses:
            return _resolve(vendor, responses[key], f"{operation.pointer}/responses/{key}")
    if success or 300 <= status < 400 and declared_success:
        return f"status {status} is not declared (the spec declares {', '.join(sorted(responses))})"
    return None


def _response_body_problems(
    vendor: str, exchange: Exchange, content: dict[str, Any], pointer: str
) -> Iterator[str]:
    content_type = _media_type(_header_map(exchange.response_headers).get("content-type"))
    if not exchange.response_body:
        yield f"response body is empty; the spec declares {', '.join(sorted(content))}"
        return
    declared = _choose_media(content, content_type)
    if declared is None:
        yield f"response Content-Type {content_type} is not declared (the spec declares {', '.join(sorted(content))})"
        return
    if content_type is None:
        yield "response has no Content-Type header"
    if not (_is_json_media(_media_type(declared)) or declared == "*/*") or "schema" not in content[declared]:
        return
    parsed = _parse_json(exchange.response_body)
    if isinstance(parsed, _NotJson):
        if declared != "*/*":
            yield f"response body is not JSON: {parsed.reason}"
        return
    schema_pointer = f"{pointer}/content/{_escape_pointer(declared)}/schema"
    yield from _schema_problems(vendor, schema_pointer, "response", parsed, "response body")


def _choose_media(content: dict[str, Any], content_type: str | None) -> str | None:
    by_media = {_media_type(media): media for media in content}
    if content_type is None:
        return next((media for media in content if _is_json_media(_media_type(media))), next(iter(content)))
    for candidate in (content_type, content_type.split("/", 1)[0] + "/*", "*/*"):
        if candidate in by_media:
            return by_media[candidate]
    return None


@dataclass(frozen=True)
class _NotJson:
    reason: str


def _parse_json(body: Any) -> Any:
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return _NotJson(str(error))


def _schema_problems(vendor: str, pointer: str, direction: str, instance: Any, what: str) -> Iterator[str]:
    errors = sorted(
        _validator(vendor, pointer, direction).iter_errors(instance),
        key=lambda error: list(error.absolute_path),
    )
    # dict.fromkeys de-duplicates: the OAS 3.0 `type` keyword reports a forbidden null twice.
    lines = list(dict.fromkeys(f"{what} at {error.json_path}: {_describe(error)}" for error in errors))
    yield from lines[:_MAX_ERRORS_PER_BODY]
    if len(lines) > _MAX_ERRORS_PER_BODY:
        yield f"{what}: {len(lines) - _MAX_ERRORS_PER_BODY} more problems not shown"


def _describe(error: ValidationError) -> str:
    if error.validator == "type":
        detail = f"{_shorten(repr(error.instance))} is not of type {error.validator_value!r}"
    else:
        detail = _shorten(error.message)
    if error.context:
        closest = best_match(error.context)
        detail += f" (closest: {_shorten(closest.message)} at {closest.json_path})"
    return detail


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 3] + "..."


def assert_conforms(vendor: str, exchanges: Iterable[Exchange], allow: Iterable[str] = ()) -> None:
    """Raise AssertionError listing every problem of every exchange, except those ``allow`` excuses.

    An ``allow`` entry is a glob matched against the start of a problem line, which reads
    ``"METHOD /path/as/sent -> status: problem"``; e.g. ``"GET /rest/agile/1.0/*"`` or
    ``"* operation not in spec*"``. No exchanges at all is a failure too: a recorder that captured nothing
    would otherwise pass vacuously.
    """
    exchanges = list(exchanges)
    if not exchanges:
        raise AssertionError(f"no exchanges to check against the {vendor} spec")
    patterns = [pattern + "*" for pattern in allow]
    problems = [
        problem
        for exchange in exchanges
        for problem in validate_exchange(vendor, exchange)
        if not any(fnmatch.fnmatchcase(problem, pattern) for pattern in patterns)
    ]
    if problems:
        listing = "\n".join(f"  {problem}" for problem in problems)
        raise AssertionError(f"{len(problems)} departure(s) from the {vendor} spec:\n{listing}")
