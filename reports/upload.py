"""Uploading report files to the Graph drive folders the configuration names (`writeback.<connection>.drive_folder`
of a Planner or MS Project connection), through the connection's own `msgraph-sdk` session
(`connectors.graph.GraphSession`: its auth, TLS settings, retries and request counts).

A file goes to `PUT /drives/{drive}/items/{folder}:/{name}:/content` (a simple upload, which replaces a file of the
same name), so uploading again updates the same drive item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pmsync.errors import PmsyncError

if TYPE_CHECKING:
    from pmsync.config import Config

GRAPH_TOOLS = ("planner", "msproject")


@dataclass(frozen=True)
class Upload:
    """One file placed in a drive folder: which connection, the folder, the file name and the drive item id."""

    connection: str
    drive_id: str
    folder_id: str
    name: str
    item_id: str


def drive_folders(config: Config) -> list[tuple[str, str, str]]:
    """(connection name, drive id, folder item id) of every Graph connection whose write-back names a folder."""
    from pmsync.config import DRIVE_ITEM

    folders = []
    for connection in config.connections:
        if connection.tool not in GRAPH_TOOLS:
            continue
        folder = config.writeback_for(connection.name).drive_folder
        match = DRIVE_ITEM.match(folder or "")
        if match:
            folders.append((connection.name, match["drive_id"], match["item_id"]))
    return folders


def upload_reports(config: Config, files: list[Path]) -> list[Upload]:
    """Upload every file to every configured drive folder. Every folder is tried; when any upload fails, one
    PmsyncError names each failure after the others are done."""
    uploads, failures = [], []
    for connection_name, drive_id, folder_id in drive_folders(config):
        try:
            uploads.extend(_upload_to_folder(config, connection_name, drive_id, folder_id, files))
        except PmsyncError as error:
            failures.append(str(error))
    if failures:
        raise PmsyncError("Reports were written locally but not uploaded: " + " ".join(failures))
    return uploads


def _upload_to_folder(
    config: Config, connection_name: str, drive_id: str, folder_id: str, files: list[Path]
) -> list[Upload]:
    from connectors.graph import GraphSession
    from connectors.http import RequestStats

    session = GraphSession.from_config(
        f"the drive folder of {connection_name}", config.connection(connection_name), RequestStats()
    )
    try:
        return [
            Upload(
                connection_name,
                drive_id,
                folder_id,
                path.name,
                upload_file(session, drive_id, folder_id, path.name, path.read_bytes()),
            )
            for path in files
        ]
    finally:
        session.close()


def upload_file(session: Any, drive_id: str, folder_id: str, name: str, content: bytes) -> str:
    """PUT `content` as the file `name` in a drive folder through a GraphSession; returns the drive item id.
    Failures are one ConnectionFailed sentence naming the folder (never a token)."""
    import httpx
    from azure.core.exceptions import ClientAuthenticationError
    from kiota_abstractions.api_error import APIError

    url = (
        f"{session.api_url}/drives/{quote(drive_id, safe='')}/items/{quote(folder_id, safe='')}:/"
        f"{quote(name, safe='')}:/content"
    )
    builder = (
        session.client.drives.by_drive_id(drive_id).items.by_drive_item_id(folder_id).content.with_url(url)
    )
    doing = f"uploading {name} to drive:{drive_id}/items/{folder_id}"
    try:
        item = session.run(builder.put(content))
    except APIError as error:
        raise session.failure(error.response_status_code, doing) from None
    except ClientAuthenticationError:
        raise session.failure(401, doing) from None
    except httpx.TransportError as error:
        raise PmsyncError(
            f"{session.tool}: {doing} failed ({type(error).__name__}); check base_url and the network."
        ) from None
    return str(getattr(item, "id", "") or "")
