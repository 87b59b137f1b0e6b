"""The pmsync code location: everything under `pipelines/defs/`, one file per concern."""
from __future__ import annotations

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """Load the definitions of `pipelines/defs/` (the configuration named by $PMSYNC_CONFIG decides the connections)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
