"""MS Project files (.mpp and MS Project XML) read with MPXJ, or for MS Project XML in pure Python, from
OneDrive/SharePoint through `msgraph-sdk` or from local paths.

A configured file is `drive:{drive_id}/items/{item_id}` (the item's metadata is read first, one request, and its
content downloaded only when its eTag differs from the cursor's: the SDK follows `/content`'s 302 to the
pre-authenticated download URL, two requests) or `file:/abs/path` (read again only when its modification time or
size changed). A file is told by its content: MS Project XML (MSPDI, "Save as XML") is parsed in Python by
`connectors.mspdi_reader` into the very records MPXJ would give (its module docstring says how, and which rare
files it leaves to MPXJ); anything else (.mpp, or MSPDI that reader declines) is read by MPXJ's
UniversalProjectReader in a JVM (JPype). The JVM costs about 0.35 s to start and MPXJ's first read about 0.8 s
more, so it is started only for a file whose bytes show that it needs MPXJ: a pull of MSPDI files never starts it.

A raw record is one task of a file, as a plain dict (`raw_record`, from MPXJ's Task or from the MSPDI Task
element alike; the project summary row, UID 0, is the file itself and is left out):

    uid, id (row number), name, outline_level, outline_number, wbs, summary, milestone, percent_complete,
    start, finish, baseline_finish, actual_start, actual_finish, created   -- local wall times, ISO 8601
                                                                           -- without a zone, as the file has them
    start_date, finish_date, baseline_finish_date                          -- the calendar days MS Project shows
    parent_uid (None at the top level), notes,
    resources: [{name, email}] of the task's assignments,
    predecessors: [{uid, type (FS/SS/FF/SF), lag_days}],
    _pmsync: {native_id, parent_native_id, project_native_id, progress, assignee_name, assignee_email}

The native id is `{item_id}:{uid}` for drive files and `{file stem}:{uid}` for local files; the file is the
project. Predecessors become native Links; a baseline finish (Baseline 0) other than the current finish becomes a
DueChange from the baseline to the finish at the file's last modification, so that "baseline = original" means the
plan's baseline. Records are dated by calendar day (`*_date`) because MS Project's times carry no zone.

The cursor is {file reference: JSON of {"version": eTag or "mtime_ns:size", "uids": "1-40,42"}}; the uids let the
census name the tasks of unchanged files without reading them again. Costs per pull: one metadata request per
drive file, plus two per changed drive file; none for local files. The drive files are fetched FILES_AT_ONCE at a
time, a window's metadata requests and then its downloads side by side; the files are then read one after
another, in the configured order, and a file's cursor entry is committed with its last batch. The JVM, when a file
needs it, starts on a thread of its own as soon as that file's bytes are in, while the others still download.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.base import Batch, Connector, DueChange, Link, PersonRecord, ProjectRecord
from connectors.graph import GraphSession
from connectors.http import RequestStats
from pmsync.config import MsProjectConnection, ProjectFile
from pmsync.errors import ConnectionFailed

log = logging.getLogger("pmsync.connectors.msproject")

TOOL_LABEL = "MS Project files"
BATCH_SIZE = 1000
FILES_AT_ONCE = 8  # drive files whose metadata (and, where changed, content) are read side by side
LINK_KINDS = {"FS": "finish_to_start", "SS": "start_to_start", "FF": "finish_to_finish", "SF": "start_to_finish"}
_JVM_LOCK = threading.Lock()
_STARTER_LOCK = threading.Lock()
_JVM_STARTER: threading.Thread | None = None
# MPXJ's log4j quiet; and the client compiler only (C1): a sync reads a few files once per process, where the
# optimizing compiler's warm-up costs more than it wins (a cold read of two .mpp files: 0.99 s -> 0.63 s; forty
# reads in one process: 2.84 s and 2.95 s).
JVM_OPTIONS = ("-Dlog4j2.loggerContextFactory=org.apache.logging.log4j.simple.SimpleLoggerContextFactory",
               "-XX:TieredStopAtLevel=1")


# -- MPXJ -----------------------------------------------------------------------------------------------------

def start_jvm() -> None:
    """Start the JVM once per process with MPXJ's jars on the class path (idempotent, thread-safe).

    Importing the `mpxj` package adds its jars to JPype's class path; a JVM started earlier by someone else
    without them cannot load MPXJ, which is reported as one sentence.
    """
    with _JVM_LOCK:
        import jpype
        import jpype.config
        import mpxj  # noqa: F401 - the import puts the MPXJ jars on the class path

        if not jpype.isJVMStarted():
            # Destroying the JVM at interpreter exit waits on MPXJ's non-daemon threads and can hang the process
            # for good; the operating system reclaims it anyway.
            jpype.config.destroy_jvm = False
            try:
                jpype.startJVM(*JVM_OPTIONS, convertStrings=True)
            except (OSError, RuntimeError) as exc:
                raise ConnectionFailed(f"MS Project files need a Java runtime for MPXJ, and none started ({exc}); "
                                       "install Java 11 or later.") from None
        try:
            jpype.JClass("org.mpxj.reader.UniversalProjectReader")
        except TypeError:
            raise ConnectionFailed("MS Project files: the JVM was started without MPXJ's jars; import mpxj before "
                                   "starting the JVM.") from None


def start_jvm_in_background() -> None:
    """Start the JVM on a thread of its own (once), so that it comes up while the file is downloaded: JPype lets
    Python run meanwhile. A failure is left for `start_jvm` to report when the file is read."""
    global _JVM_STARTER
    with _STARTER_LOCK:
        if _JVM_STARTER is None:
            _JVM_STARTER = threading.Thread(target=_start_quietly, name="pmsync-jvm-start", daemon=True)
            _JVM_STARTER.start()


def _start_quietly() -> None:
    with suppress(Exception):
        start_jvm()


class UnreadableFile(ValueError):
    """A plan file MPXJ cannot read (the message says which and why)."""


def read_project(content: bytes) -> Any:
    """MPXJ's ProjectFile for the bytes of an .mpp or MSPDI file; ValueError when MPXJ cannot read them."""
    start_jvm()
    import jpype

    reader = jpype.JClass("org.mpxj.reader.UniversalProjectReader")()
    stream = jpype.JClass("java.io.ByteArrayInputStream")(jpype.JArray(jpype.JByte)(content))
    try:
        project = reader.read(stream)
    except jpype.JException as exc:
        raise ValueError(f"MPXJ could not read the file: {exc.getMessage()}") from None
    if project is None:
        raise ValueError("MPXJ does not recognise the file's format")
    return project


def _iso(value: Any) -> str | None:
    """A java.time.LocalDateTime as `YYYY-MM-DDTHH:MM:SS` (no zone, as the file has it)."""
    if value is None:
        return None
    return f"{value.toLocalDate()}T{int(value.getHour()):02d}:{int(value.getMinute()):02d}:{int(value.getSecond()):02d}"


def _text(value: Any) -> str | None:
    return None if value is None else (str(value) or None)


def progress_of(percent: float | None) -> str:
    """notStarted, inProgress or completed from percent complete."""
    if not percent:
        return "notStarted"
    return "completed" if percent >= 100 else "inProgress"


def lag_days(relation: Any, properties: Any) -> float:
    """A predecessor link's lag in (working) days, whatever unit the file stores it in."""
    lag = relation.getLag()
    if lag is None:
        return 0.0
    days = lag.convertUnits(_time_unit("DAYS"), properties)
    return round(float(days.getDuration()), 4)


def _time_unit(name: str) -> Any:
    import jpype

    return getattr(jpype.JClass("org.mpxj.TimeUnit"), name)


def task_record(task: Any, properties: Any, prefix: str) -> dict[str, Any]:
    """One MPXJ Task as the plain dict documented in the module docstring (prefix: item id or file stem)."""
    parent = task.getParentTask()
    percent = task.getPercentageComplete()
    resources = []
    for assignment in task.getResourceAssignments():
        resource = assignment.getResource()
        if resource is not None:
            resources.append({"name": _text(resource.getName()), "email": _text(resource.getEmailAddress())})
    predecessors = [
        {"uid": int(r.getPredecessorTask().getUniqueID()), "type": str(r.getType()),
         "lag_days": lag_days(r, properties)}
        for r in task.getPredecessors() if r.getPredecessorTask() is not None
    ]
    return raw_record(
        prefix,
        uid=int(task.getUniqueID()),
        id=int(task.getID()) if task.getID() is not None else None,
        name=_text(task.getName()),
        outline_level=int(task.getOutlineLevel()) if task.getOutlineLevel() is not None else None,
        outline_number=_text(task.getOutlineNumber()),
        wbs=_text(task.getWBS()),
        summary=bool(task.getSummary()),
        milestone=bool(task.getMilestone()),
        percent_complete=float(percent.doubleValue()) if percent is not None else None,
        start=_iso(task.getStart()),
        finish=_iso(task.getFinish()),
        baseline_finish=_iso(task.getBaselineFinish()),
        actual_start=_iso(task.getActualStart()),
        actual_finish=_iso(task.getActualFinish()),
        created=_iso(task.getCreateDate()),
        parent_uid=int(parent.getUniqueID()) if parent is not None else None,
        notes=_text(task.getNotes()),
        resources=resources,
        predecessors=predecessors,
    )


def raw_record(prefix: str, *, uid: int, id: int | None, name: str | None, outline_level: int | None,
               outline_number: str | None, wbs: str | None, summary: bool, milestone: bool,
               percent_complete: float | None, start: str | None, finish: str | None, baseline_finish: str | None,
               actual_start: str | None, actual_finish: str | None, created: str | None, parent_uid: int | None,
               notes: str | None, resources: list[dict[str, str | None]],
               predecessors: list[dict[str, Any]]) -> dict[str, Any]:
    """The raw record of one task from its fields, whoever read them (MPXJ, or `mspdi_reader` for MSPDI XML): the
    dates as `YYYY-MM-DDTHH:MM:SS`, a parent UID of 0 (the project summary row) as the top level."""
    if parent_uid == 0:
        parent_uid = None
    first = resources[0] if resources else {}
    return {
        "uid": uid,
        "id": id,
        "name": name,
        "outline_level": outline_level,
        "outline_number": outline_number,
        "wbs": wbs,
        "summary": summary,
        "milestone": milestone,
        "percent_complete": percent_complete,
        "start": start,
        "finish": finish,
        "baseline_finish": baseline_finish,
        "actual_start": actual_start,
        "actual_finish": actual_finish,
        "created": created,
        "start_date": _day_of(start),
        "finish_date": _day_of(finish),
        "baseline_finish_date": _day_of(baseline_finish),
        "parent_uid": parent_uid,
        "notes": notes,
        "resources": resources,
        "predecessors": predecessors,
        "_pmsync": {
            "native_id": f"{prefix}:{uid}",
            "parent_native_id": f"{prefix}:{parent_uid}" if parent_uid is not None else None,
            "project_native_id": prefix,
            "progress": progress_of(percent_complete),
            "assignee_name": first.get("name"),
            "assignee_email": first.get("email"),
        },
    }


def _day_of(iso: str | None) -> str | None:
    """The calendar day of a `YYYY-MM-DDTHH:MM:SS` time."""
    return None if iso is None else iso[:iso.index("T")]


def project_records(project: Any, prefix: str) -> list[dict[str, Any]]:
    """Every real task of an MPXJ project as a raw record, in the file's row order (UID 0 and blank rows left out)."""
    properties = project.getProjectProperties()
    return [task_record(task, properties, prefix) for task in project.getTasks()
            if task.getUniqueID() is not None and int(task.getUniqueID()) != 0 and not task.getNull()]


def project_title(project: Any, fallback: str) -> str:
    properties = project.getProjectProperties()
    return _text(properties.getProjectTitle()) or fallback


# -- what records imply ---------------------------------------------------------------------------------------

def links_of(records: Iterable[dict[str, Any]], prefix: str) -> list[Link]:
    """The records' predecessors as native links, with their type and lag."""
    return [
        Link(successor_native_id=r["_pmsync"]["native_id"], predecessor_native_id=f"{prefix}:{p['uid']}",
             kind=LINK_KINDS.get(p["type"], "finish_to_start"), lag_days=float(p["lag_days"]))
        for r in records for p in r["predecessors"]
    ]


def baseline_changes(records: Iterable[dict[str, Any]], changed_at: datetime) -> list[DueChange]:
    """A due change from baseline finish to finish for every task whose finish moved off its baseline."""
    changes = []
    for r in records:
        baseline, finish = r["baseline_finish_date"], r["finish_date"]
        if baseline and finish and baseline != finish:
            changes.append(DueChange(native_id=r["_pmsync"]["native_id"], changed_at=changed_at,
                                     old_due=datetime.fromisoformat(baseline).date(),
                                     new_due=datetime.fromisoformat(finish).date()))
    return changes


def people_of(records: Iterable[dict[str, Any]]) -> list[PersonRecord]:
    """The resources assigned to the records, keyed by email where the file gives one, else by name."""
    people: dict[str, PersonRecord] = {}
    for r in records:
        for resource in r["resources"]:
            key = resource["email"] or resource["name"]
            if key:
                people[key] = PersonRecord(native_id=key, display_name=resource["name"], email=resource["email"])
    return list(people.values())


def uid_ranges(uids: Iterable[int]) -> str:
    """Sorted uids as compact ranges: `1-40,42`."""
    parts: list[str] = []
    ordered = sorted(set(uids))
    k = 0
    while k < len(ordered):
        end = k
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        parts.append(str(ordered[k]) if end == k else f"{ordered[k]}-{ordered[end]}")
        k = end + 1
    return ",".join(parts)


def parse_ranges(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


@dataclass
class FileVersion:
    """What is known of one file without reading its tasks: its identity, version and modification time."""

    ref: str
    prefix: str
    name: str
    version: str
    modified: datetime
    url: str | None = None


# -- the connector --------------------------------------------------------------------------------------------

class MsProjectConnector(Connector):
    """The configured MS Project files (drive items and local paths)."""

    tool = "msproject"

    def __init__(self, name: str, files: list[ProjectFile], session: GraphSession | None = None,
                 stats: RequestStats | None = None) -> None:
        super().__init__(name)
        self.files = list(files)
        self.session = session
        self.stats = session.stats if session is not None else (stats or self.stats)
        self._census: set[str] | None = None

    @classmethod
    def from_config(cls, conn: MsProjectConnection) -> MsProjectConnector:
        """The connector for a configured MS Project connection (no request is made until it is used)."""
        stats = RequestStats()
        session = GraphSession.from_config(TOOL_LABEL, conn, stats) if conn.auth is not None else None
        return cls(conn.name, conn.files, session, stats)

    # -- the Connector interface ------------------------------------------------------------------------------
    def check(self) -> None:
        """Read each file's metadata (drive items) or stat it (local paths)."""
        for f in self.files:
            self.version_of(f)

    def pull(self, cursor: dict[str, str] | None) -> Iterator[Batch]:
        """Batches of the tasks of every file changed since `cursor` (all when None), one file after another; the
        last batch of a file carries the file as a project and the cursor that marks it read."""
        committed = dict(cursor or {})
        census: set[str] = set()
        for f, version, content in self._fetched(committed):
            known = _cursor_entry(committed.get(version.ref))
            if content is None:  # unchanged since the cursor
                census.update(f"{version.prefix}:{uid}" for uid in parse_ranges((known or {}).get("uids", "")))
                continue
            try:
                title, records = self._read(f, version, content)
            except UnreadableFile as exc:
                # Quarantined, not fatal: the other files still load, the file's tasks are not taken as deleted,
                # and it is read again once it changes.
                if known:
                    census.update(f"{version.prefix}:{uid}" for uid in parse_ranges(known.get("uids", "")))
                committed[version.ref] = orjson.dumps(
                    {"version": version.version, "uids": (known or {}).get("uids", "")}).decode()
                payload = {"file": version.name, "source": str(f), "version": version.version}
                yield Batch(rejected=[(version.prefix, payload, str(exc))], cursor=dict(committed))
                continue
            census.update(r["_pmsync"]["native_id"] for r in records)
            committed[version.ref] = orjson.dumps(
                {"version": version.version, "uids": uid_ranges(r["uid"] for r in records)}).decode()
            yield from self._file_batches(version, title, records, dict(committed))
        self._census = census

    def census(self) -> Iterator[str]:
        """Every task of the files: known from this connector's last pull, else read from every file now."""
        if self._census is None:
            list(self.pull(None))
        yield from sorted(self._census or ())

    def has_changes(self, cursor: dict[str, str] | None) -> bool:
        """One metadata request per drive file (FILES_AT_ONCE at once), a stat per local file: True when any
        version differs."""
        if not cursor:
            return True
        for start in range(0, len(self.files), FILES_AT_ONCE):
            for version in self._versions(self.files[start:start + FILES_AT_ONCE]):
                if isinstance(version, BaseException):
                    raise version
                if _changed(cursor, version):
                    return True
        return False

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    # -- pieces -----------------------------------------------------------------------------------------------
    def version_of(self, f: ProjectFile) -> FileVersion:
        """A file's identity and version: the drive item's eTag (one request), or a local file's mtime and size."""
        if f.kind == "file":
            return _local_version(f)
        return _drive_version(f, self.session_().get_json(self._item(f), f"reading drive item {f.item_id}"))

    def _fetched(self, cursor: dict[str, str]) -> Iterator[tuple[ProjectFile, FileVersion, bytes | None]]:
        """Every file in the configured order with its version and, where that differs from the cursor's, its
        content (None where it does not). Files are fetched FILES_AT_ONCE at a time: a window's metadata requests
        side by side, then its downloads side by side on a thread of their own, each file handed over as soon as
        its own bytes are in (so the first is read while the others download). A file's failure is raised in its
        turn, after the files before it. The JVM starts (on a thread of its own) as soon as a file's bytes show that
        it needs MPXJ (`_prestart_jvm_for`)."""
        for start in range(0, len(self.files), FILES_AT_ONCE):
            window = self.files[start:start + FILES_AT_ONCE]
            versions = self._versions(window)
            changed = [k for k, version in enumerate(versions)
                       if not isinstance(version, BaseException) and _changed(cursor, version)]
            downloads, downloader = self._contents([window[k] for k in changed])
            contents = dict(zip(changed, downloads, strict=True))
            try:
                for k, f in enumerate(window):
                    version = versions[k]
                    if isinstance(version, BaseException):
                        raise version
                    yield f, version, None if k not in contents else contents[k].result()
            finally:
                if downloader is not None:
                    downloader.join()  # the session is free again (and can be closed) once its downloads end

    def _versions(self, files: list[ProjectFile]) -> list[FileVersion | BaseException]:
        """`version_of` each file (a failure in its place), the drive items' metadata requests all at once."""
        out: list[FileVersion | BaseException] = []
        for f in files:
            try:
                out.append(_local_version(f) if f.kind == "file" else _PENDING)
            except ConnectionFailed as exc:
                out.append(exc)
        drive = [k for k, f in enumerate(files) if f.kind != "file"]
        if drive:
            session = self.session_()
            bodies = session.run(_all(session.fetch_bytes(self._item(files[k]), f"reading drive item "
                                                                              f"{files[k].item_id}") for k in drive))
            for k, body in zip(drive, bodies, strict=True):
                out[k] = body if isinstance(body, BaseException) else _drive_version(
                    files[k], orjson.loads(body) if body else None)
        return out

    def _contents(self, files: list[ProjectFile]) -> tuple[list[Future[bytes]], threading.Thread | None]:
        """Each file's bytes as a future: local files read now, drive files downloaded side by side on a thread
        that runs the session's loop (returned, to be joined); a failure is the future's."""
        out: list[Future[bytes]] = []
        drive: list[tuple[ProjectFile, Future[bytes]]] = []
        for f in files:
            future: Future[bytes] = Future()
            out.append(future)
            if f.kind != "file":
                drive.append((f, future))
                continue
            assert f.path is not None
            try:
                content = f.path.read_bytes()
            except OSError as exc:
                future.set_exception(_unreadable(f, exc))
            else:
                _prestart_jvm_for(content)
                future.set_result(content)
        if not drive:
            return out, None
        session = self.session_()

        async def download(f: ProjectFile, future: Future[bytes]) -> None:
            try:
                content = await session.fetch_bytes(self._item(f).content, f"downloading drive item {f.item_id}")
            except Exception as exc:  # handed to the reader in the file's turn
                future.set_exception(exc)
            else:
                _prestart_jvm_for(content)
                future.set_result(content)

        async def download_all() -> None:
            await asyncio.gather(*(download(f, future) for f, future in drive))

        def run() -> None:
            stopped: BaseException = ConnectionFailed(f"{self.name}: the downloads stopped before they ended.")
            try:
                session.run(download_all())
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, whose thread can raise it
                stopped = exc
            finally:
                for _, future in drive:
                    if not future.done():  # no reader may wait for ever on a download that never ran
                        future.set_exception(stopped)

        downloader = threading.Thread(target=run, daemon=True, name=f"pmsync-{self.name}-downloads")
        downloader.start()
        return out, downloader

    def _read(self, f: ProjectFile, version: FileVersion, content: bytes) -> tuple[str, list[dict[str, Any]]]:
        """A file's title (its name's stem when it has none) and raw records: MSPDI XML read in Python, anything
        else (or MSPDI that `mspdi_reader` declines) by MPXJ; `UnreadableFile` when MPXJ cannot read it either."""
        from connectors.mspdi_reader import read_mspdi  # here: that module builds its records with raw_record

        fallback = Path(version.name).stem
        fast = read_mspdi(content, version.prefix)
        if fast is not None:
            title, records = fast
            return title or fallback, records
        project = self._parse(f, version, content)
        return project_title(project, fallback), project_records(project, version.prefix)

    def _parse(self, f: ProjectFile, version: FileVersion, content: bytes) -> Any:
        try:
            return read_project(content)
        except ValueError as exc:
            raise UnreadableFile(f"MS Project file {version.name} ({f}) is not a project MPXJ can read: "
                                 f"{exc}; check that it is an .mpp or MS Project XML file.") from None

    def _file_batches(self, version: FileVersion, title: str, records: list[dict[str, Any]],
                      cursor: dict[str, str]) -> Iterator[Batch]:
        """A file's records in batches of BATCH_SIZE; only the last carries the cursor (a crash re-reads the file)."""
        project = ProjectRecord(native_id=version.prefix, name=title, url=version.url)
        chunks = [records[k:k + BATCH_SIZE] for k in range(0, len(records), BATCH_SIZE)] or [[]]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            yield Batch(
                records=chunk,
                projects=[project] if n == 0 else [],
                due_changes=baseline_changes(chunk, version.modified),
                links=links_of(chunk, version.prefix),
                covers_links_of=[r["_pmsync"]["native_id"] for r in chunk],
                people=people_of(chunk),
                cursor=cursor if last else None,
            )

    def _item(self, f: ProjectFile) -> Any:
        return self.session_().client.drives.by_drive_id(str(f.drive_id)).items.by_drive_item_id(str(f.item_id))

    def session_(self) -> GraphSession:
        if self.session is None:
            raise ConnectionFailed(f"{self.name}: drive files need Microsoft Graph credentials; add auth to the "
                                   "connection.")
        return self.session


_PENDING = ConnectionFailed("drive item not read")  # a drive file's place until its metadata is read


def _prestart_jvm_for(content: bytes) -> None:
    """Start the JVM in the background for bytes that are not MS Project XML (MPXJ will read them), so that it comes
    up while the other files download; MSPDI is read without it. An MSPDI file that `mspdi_reader` then declines
    starts it when read."""
    from connectors.mspdi_reader import looks_like_mspdi  # here: that module imports this one

    if not looks_like_mspdi(content):
        start_jvm_in_background()


async def _all(awaitables: Iterable[Awaitable[Any]]) -> list[Any]:
    """The awaitables' results in order, run at once; a failure is returned in its place."""
    return await asyncio.gather(*awaitables, return_exceptions=True)


def _local_version(f: ProjectFile) -> FileVersion:
    """A local file's identity, and its modification time and size as its version."""
    assert f.path is not None
    try:
        stat = f.path.stat()
    except OSError as exc:
        raise _unreadable(f, exc) from None
    return FileVersion(ref=str(f), prefix=f.path.stem, name=f.path.name, version=f"{stat.st_mtime_ns}:{stat.st_size}",
                       modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC), url=f.path.as_uri())


def _unreadable(f: ProjectFile, exc: OSError) -> ConnectionFailed:
    """A local file the operating system would not let pmsync read, named, with the fix."""
    return ConnectionFailed(f"MS Project file {f.path} cannot be read ({exc.strerror}); check the connection's files.")


def _drive_version(f: ProjectFile, item: dict[str, Any]) -> FileVersion:
    """A drive file's identity, and its eTag as its version, from the item's metadata."""
    modified = item.get("lastModifiedDateTime") or item.get("createdDateTime")
    return FileVersion(ref=str(f), prefix=str(f.item_id), name=item.get("name") or str(f.item_id),
                       version=str(item.get("eTag") or item.get("cTag") or modified),
                       modified=datetime.fromisoformat(modified), url=item.get("webUrl"))


def _changed(cursor: dict[str, str], version: FileVersion) -> bool:
    """Whether the file's version differs from the one the cursor read (or the cursor never read it)."""
    return (_cursor_entry(cursor.get(version.ref)) or {}).get("version") != version.version


def _cursor_entry(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    try:
        entry = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None
