"""Which connector serves which tool; modules are imported only when a connection of that tool is configured."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from connectors.base import Connector

CONNECTOR_CLASSES = {
    "jira": ("connectors.jira", "JiraConnector"),
    "asana": ("connectors.asana", "AsanaConnector"),
    "trello": ("connectors.trello", "TrelloConnector"),
    "planner": ("connectors.planner", "PlannerConnector"),
    "msproject": ("connectors.msproject", "MsProjectConnector"),
}


def build_connector(connection: Any, timezone: str = "UTC") -> Connector:
    """The connector for one configured connection (a pmsync.config connection model).

    `timezone` is the configuration's: connectors that read dates out of datetimes (Trello's due, Planner's
    dueDateTime) take it as `timezone_name`.
    """
    module_name, class_name = CONNECTOR_CLASSES[connection.tool]
    factory = getattr(importlib.import_module(module_name), class_name).from_config
    if "timezone_name" in inspect.signature(factory).parameters:
        return factory(connection, timezone_name=timezone)
    return factory(connection)
