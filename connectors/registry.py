"""Which connector serves which tool; modules are imported only when a connection of that tool is configured."""
from __future__ import annotations

import importlib
from typing import Any

from connectors.base import Connector

CONNECTOR_CLASSES = {
    "jira": ("connectors.jira", "JiraConnector"),
    "asana": ("connectors.asana", "AsanaConnector"),
    "trello": ("connectors.trello", "TrelloConnector"),
    "planner": ("connectors.planner", "PlannerConnector"),
    "msproject": ("connectors.msproject", "MsProjectConnector"),
}


def build_connector(connection: Any) -> Connector:
    """The connector for one configured connection (a pmsync.config connection model)."""
    module_name, class_name = CONNECTOR_CLASSES[connection.tool]
    module = importlib.import_module(module_name)
    return getattr(module, class_name).from_config(connection)
