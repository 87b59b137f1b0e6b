"""Print the warehouse tables of `mappings/schema.py` as Markdown (the table part of docs/contract.md)."""
from __future__ import annotations

from mappings.schema import TABLES


def tables_markdown() -> str:
    """Every table with its key and columns, as Markdown."""
    lines: list[str] = []
    for table in TABLES.values():
        lines.append(f"### `{table.name}` (key: {', '.join(table.primary_key)})")
        if table.doc:
            lines.append(table.doc)
        lines += ["", "| column | type | meaning |", "|---|---|---|"]
        for column in table.columns:
            required = "" if column.nullable else ", required"
            lines.append(f"| `{column.name}` | {column.type}{required} | {column.doc.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(tables_markdown(), end="")
