"""How each tool's task URL names its task: the patterns cross-tool links are resolved with (pure data)."""
from __future__ import annotations

# (tool, tasks column the name is in, pattern with a `ref` group)
URL_PATTERNS = (
    ("jira", "key", r"/browse/(?P<ref>[A-Z][A-Z0-9_]*-\d+)"),
    ("asana", "native_id", r"app\.asana\.com/(?:0/\d+/|\d+/\d+/(?:project/\d+/)?task/)(?P<ref>\d+)"),
    ("trello", "key", r"trello\.com/c/(?P<ref>[A-Za-z0-9]{8})"),
    ("planner", "native_id", r"/task/(?P<ref>[A-Za-z0-9_-]{28})"),
)
