"""agentvm's records on a standalone ESXi host: directories and files on the host's datastore.

Used by ``controller.lease`` (``lease_store``) when the session is a host agent (``about.apiType``
HostAgent): a host has no ExtensionManager, so the hidden extensions of ``vsphere.extensions`` cannot be
made there. ``DatastoreFiles`` (where, one file read or written whole) is also where ``vsphere.hostnet``
keeps a host's hostNetwork ownership record (a host has no CustomFieldsManager either): the file
``.agentvm/org.tungsten.agentvm.hostNetwork.txt``, written as a record is (below: a PUT beside it, then a
rename), read with one GET. The same protocol needs one atomic create-if-absent, and a datastore offers it:
``FileManager.MakeDirectory`` with ``createParentDirectories`` false is refused with FileAlreadyExists when
the directory exists (the vSphere API reference; govmomi's simulator, the lab's, makes it with one
``os.Mkdir``, which the kernel does atomically). So:

- **Which datastore.** The first, by name, of the datastores the session sees (on a host agent: the host's
  own), so that every agentvm process picks the same one whatever order the host lists them in. It is
  read once per session (one ``RetrievePropertiesEx``). A host with no datastore cannot hold the lease
  (ConfigurationError naming it).
- **A record** is the directory ``[<datastore>] .agentvm/<solution key>.lease.<N>`` (N the generation) and
  the file ``record.json`` in it: holder (host, pid, command, start, token), renewal counter, TTL and the
  released flag, as JSON (``record_json``/``parse_record``, pure). Registering N: MakeDirectory of the
  directory (refused: another contender has N), then the record written.
- **Writing a record** never leaves a half-written ``record.json`` for a reader to see (a PUT truncates the
  file before its body arrives, and a truncated record read as "not ours" would free the lease): the JSON
  is PUT to a file of its own beside the directories (``.agentvm/.tmp-<name>-<token>.json``) and then moved
  onto ``<name>/record.json`` with ``MoveDatastoreFile_Task`` (force), a rename. The move fails with
  FileNotFound when the directory is gone (the record was removed: ``retire``, or a host whose datastore
  was wiped): NotFoundError, and the holder has lost the lease (a plain PUT would have made the directory
  again).
- **A directory without its record** (a contender between its MakeDirectory and its first write, or one
  that died there) is a live record of an unknown holder (``UNWRITTEN_COMMAND``, a token naming the
  directory): it takes its number, and is judged expired once seen unchanged for the minimum TTL. That is
  safe: no holder ever acted on it (a contender holds only after its record is written and read back).
  A ``record.json`` agentvm cannot parse is left alone and counts for the numbering only, as a foreign
  extension does on a vCenter.
- **Reading** is one ``SearchDatastore_Task`` of ``.agentvm`` (folders matching ``<key>.lease.*``) and one
  GET of each record (``/folder/...``). There are one or two records at a time: a new holder removes the
  lower ones. Unlike vCenter's ``extensionList`` the read is not one snapshot, but each record is seen
  as it was at some moment of the read, and the protocol's argument only ever needs "written before this
  record's read" (``controller.lease``); a directory removed between the search and its GET reads as a
  directory without its record, which can only make a contender wait or retry, never let it in.
- **Removing** a record is ``DeleteDatastoreFile_Task`` of its directory. ``.agentvm`` itself stays.

Files go over the host's HTTP datastore access (``https://<host>/folder/<path>?dcPath=ha-datacenter&
dsName=<datastore>``) with the session's cookie and the session's TLS settings (pinned thumbprint, CA or
insecure, as ``Session``); each is counted in ``session.stats`` as ``"GET /folder"``/``"PUT /folder"``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import secrets
import threading
import weakref
from typing import Any
from urllib.parse import quote, urlencode

from pyVmomi import vim

from agentvm.model.agency import MoRef
from agentvm.model.errors import (
    AgentvmError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    TransientError,
)
from agentvm.model.lease import LeaseHolder, LeaseRecord
from agentvm.vsphere import tls
from agentvm.vsphere.collector import property_spec, retrieve
from agentvm.vsphere.faults import fault_name, to_agentvm_error
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task

log = logging.getLogger(__name__)

LEASE_DIR = ".agentvm"
RECORD_FILE = "record.json"
DC_PATH = "ha-datacenter"  # a host agent's one datacenter, as ESXi names it
UNWRITTEN_COMMAND = "(record not written yet)"
_FORMAT = 1
_TIMEOUT = 30.0


def lease_prefix(solution_key: str) -> str:
    return f"{solution_key}.lease."


def lease_dir_name(solution_key: str, generation: int) -> str:
    """``org.tungsten.agentvm.lease.42``: the directory of generation 42 under ``.agentvm``."""
    return f"{lease_prefix(solution_key)}{generation}"


def generation_of(name: str, solution_key: str) -> int | None:
    """The generation a directory name under ``.agentvm`` stands for; None when it is not a lease record
    of ``solution_key`` (another solution's, a temporary file, a number with leading zeros)."""
    prefix = lease_prefix(solution_key)
    number = name.rstrip("/")[len(prefix) :] if name.startswith(prefix) else ""
    if not number.isdigit() or not number.isascii() or number != str(int(number)):
        return None
    return int(number)


def record_json(solution_key: str, record: LeaseRecord) -> bytes:
    """The content of a record's ``record.json`` (sorted, compact JSON)."""
    return json.dumps(
        {"format": _FORMAT, "solution": solution_key, "generation": record.generation, **record.written()},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def parse_record(solution_key: str, generation: int, content: bytes | None) -> LeaseRecord:
    """The record of directory ``<key>.lease.<generation>`` from its ``record.json`` (None: no such file).

    No file: a live record of an unknown holder (see the module docstring), judged with the minimum TTL.
    A file agentvm did not write as this record (not JSON, another format, another solution or
    generation, a field missing or of the wrong type): holder None, for the numbering only.
    """
    key = lease_dir_name(solution_key, generation)
    if content is None:
        unwritten = LeaseHolder(
            host="unknown", pid=0, command=UNWRITTEN_COMMAND, started="", token=f"unwritten:{key}"
        )
        return LeaseRecord(key, generation, unwritten)
    foreign = LeaseRecord(key, generation, None)
    try:
        data = json.loads(content.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return foreign
        if data.get("solution") != solution_key or data.get("generation") != generation:
            return foreign
        fields: dict[str, type | tuple[type, ...]] = {
            "host": str,
            "command": str,
            "started": str,
            "token": str,
            "pid": int,
            "renewals": int,
            "ttl": (int, float),
            "released": bool,
        }
        for name, kind in fields.items():
            value = data[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                return foreign
        if not data["token"] or data["token"].startswith("unwritten:"):
            return foreign
        holder = LeaseHolder(
            host=data["host"],
            pid=data["pid"],
            command=data["command"],
            started=data["started"],
            token=data["token"],
        )
        return LeaseRecord(
            key,
            generation,
            holder,
            renewals=data["renewals"],
            ttl=float(data["ttl"]),
            released=data["released"],
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return foreign


# the datastore chosen for a session: (name, its browser's moid); no managed object (bound to the session's
# stub, it would keep the session alive)
_chosen_by_session: weakref.WeakKeyDictionary[Session, tuple[str, str]] = weakref.WeakKeyDictionary()
_chosen_lock = threading.Lock()


class DatastoreFiles:
    """agentvm's files on a host agent's first datastore, under ``[<datastore>] .agentvm`` (see the module
    docstring: which datastore, the HTTP file access). ``read_file`` and ``write_file`` are one file each
    (a write never leaves a half-written file: a PUT beside it, then a rename); the lease's records
    (``DatastoreLeaseStore``) and host networking's ownership record (``vsphere.hostnet``) are kept so.
    Errors: the session's agentvm errors; TransientError when the host's file access fails;
    ConfigurationError when the host has no datastore.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._parent_made = False

    # -- where ----------------------------------------------------------------------------------------

    @property
    def datastore(self) -> str:
        """The name of the datastore the files are on (read once per session)."""
        return self._chosen()[0]

    def _chosen(self) -> tuple[str, Any]:
        """(name, HostDatastoreBrowser) of the datastore, read once per session (every ``Lease`` and
        ``current_holder`` makes a store of its own)."""
        with _chosen_lock:
            chosen = _chosen_by_session.get(self.session)
        if chosen is None:
            spec = property_spec(vim.Datastore, ["name", "browser"])
            found = retrieve(self.session, [vim.Datastore], [spec])
            named = sorted(
                (str(p.get("name", "")), str(p.get("browser")._moId))
                for p in found
                if p.get("name") and p.get("browser") is not None
            )
            if not named:
                raise ConfigurationError(
                    f"{self.session.url} has no datastore: agentvm keeps a standalone host's records (its "
                    "lease, what it created for hostNetwork) on the host's first datastore; add one to the "
                    "host"
                )
            chosen = named[0]
            with _chosen_lock:
                _chosen_by_session[self.session] = chosen
        name, browser = chosen
        return name, self.session.mo(MoRef("HostDatastoreBrowser", browser))

    def _path(self, *parts: str) -> str:
        return f"[{self.datastore}] {'/'.join((LEASE_DIR, *parts))}"

    # -- one file ------------------------------------------------------------------------------------

    def read_file(self, name: str) -> bytes | None:
        """The content of ``.agentvm/<name>``; None when there is no such file: one GET."""
        return self._get(name)

    def write_file(self, name: str, content: bytes) -> None:
        """``.agentvm/<name>`` holds ``content``: a PUT of a file beside it, then a rename onto it (a reader
        sees the old content or the new, never half of it); ``.agentvm`` is made first, once per store."""
        if not self._parent_made:
            self._make_directory(self._path(), parents=True)
            self._parent_made = True
        temporary = f".tmp-{name}-{secrets.token_hex(8)}"
        self._put(temporary, content)
        self._move(temporary, (name,))

    def _move(self, temporary: str, destination: tuple[str, ...]) -> None:
        """Rename ``.agentvm/<temporary>`` onto ``.agentvm/<destination>`` (force); the temporary file is
        deleted when that fails."""
        manager = self.session.content.fileManager
        try:
            task = manager.MoveDatastoreFile_Task(
                sourceName=self._path(temporary), destinationName=self._path(*destination), force=True
            )
            wait_for_task(self.session, task, what=f"write {self._path(*destination)}", timeout=_TIMEOUT)
        except AgentvmError:
            with contextlib.suppress(AgentvmError):
                self._delete(self._path(temporary))
            raise

    # -- the file manager -----------------------------------------------------------------------------

    def _make_directory(self, path: str, *, parents: bool) -> bool:
        """MakeDirectory; False when it exists (with ``parents`` an existing directory is fine)."""
        try:
            self.session.content.fileManager.MakeDirectory(name=path, createParentDirectories=parents)
        except AgentvmError as exc:
            if fault_name(exc) == "FileAlreadyExists":
                return False
            raise
        return True

    def _delete(self, path: str) -> None:
        task = self.session.content.fileManager.DeleteDatastoreFile_Task(name=path)
        wait_for_task(self.session, task, what=f"delete {path}", timeout=_TIMEOUT)

    # -- the host's HTTP file access ------------------------------------------------------------------

    def _url_path(self, *parts: str) -> str:
        query = urlencode({"dcPath": DC_PATH, "dsName": self.datastore})
        return "/folder/" + "/".join(quote(p, safe="") for p in (LEASE_DIR, *parts)) + f"?{query}"

    def _get(self, *parts: str) -> bytes | None:
        """The file's content; None when the host answers 404."""
        status, body = self._http("GET", self._url_path(*parts), None)
        if status == 404:
            return None
        if status != 200:
            raise TransientError(
                f"reading {self._path(*parts)} from {self.session.url} answered HTTP {status}; retry"
            )
        return body

    def _put(self, name: str, content: bytes) -> None:
        status, _ = self._http("PUT", self._url_path(name), content)
        if status not in (200, 201, 204):
            raise TransientError(
                f"writing {self._path(name)} to {self.session.url} answered HTTP {status}; retry"
            )

    def _http(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        session = self.session
        conn = session.conn
        connection: http.client.HTTPConnection
        if conn.scheme == "https":
            pinned = tls.normalize_thumbprint(conn.thumbprint) if conn.thumbprint else None
            connection = tls.PinnedHTTPSConnection(
                conn.host, conn.port, context=tls.ssl_context(conn), timeout=_TIMEOUT, pinned=pinned
            )
        else:
            connection = http.client.HTTPConnection(conn.host, conn.port, timeout=_TIMEOUT)
        headers = {"Cookie": f'vmware_soap_session="{_session_id(session)}"'}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(len(body))
        session.stats.record(f"{method} /folder")
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise to_agentvm_error(exc, url=session.url, what=f"{method} {path.split('?')[0]}") from exc
        finally:
            connection.close()
        if response.status in (401, 403):
            raise AuthenticationError(
                f"{session.url} refused the session's cookie for {path.split('?')[0]} "
                f"(HTTP {response.status}): log in again"
            )
        return response.status, data


class DatastoreLeaseStore(DatastoreFiles):
    """The lease records of a host agent, on its first datastore (see the module docstring).

    Implements ``controller.lease.LeaseStore``: ``read``, ``register``, ``update``, ``remove``. Errors:
    those of ``DatastoreFiles``.
    """

    # -- the LeaseStore protocol ----------------------------------------------------------------------

    def read(self, solution_key: str) -> list[LeaseRecord]:
        """Every record under the solution's lease directories, by generation: one search, one GET each."""
        _, browser = self._chosen()
        spec = vim.host.DatastoreBrowser.SearchSpec(
            query=[vim.host.DatastoreBrowser.FolderQuery()],
            matchPattern=[f"{lease_prefix(solution_key)}*"],
        )
        try:
            task = browser.SearchDatastore_Task(datastorePath=self._path(), searchSpec=spec)
            result = wait_for_task(self.session, task, what=f"search {self._path()}", timeout=_TIMEOUT)
        except NotFoundError:
            return []  # no .agentvm yet: no record
        records = []
        for info in getattr(result, "file", None) or ():
            name = str(info.path).rstrip("/")
            generation = generation_of(name, solution_key)
            if generation is None:
                continue
            records.append(parse_record(solution_key, generation, self._get(name, RECORD_FILE)))
        return sorted(records, key=lambda r: r.generation)

    def register(self, solution_key: str, record: LeaseRecord) -> bool:
        """Make the record's directory (atomic; False when it exists: another contender has that
        generation), then write the record into it (False too when the directory was removed before
        that: see the module docstring on a directory without its record)."""
        name = lease_dir_name(solution_key, record.generation)
        if not self._parent_made:
            self._make_directory(self._path(), parents=True)
            self._parent_made = True
        try:
            made = self._make_directory(self._path(name), parents=False)
        except NotFoundError:  # .agentvm went away (removed by hand, a wiped datastore): once more
            self._make_directory(self._path(), parents=True)
            made = self._make_directory(self._path(name), parents=False)
        if not made:
            return False
        try:
            self.update(solution_key, record)
        except NotFoundError:
            # removed before its record was written: a contender judged the empty directory expired, took
            # the lease above it and removed it as stale; this generation is lost like a refused one
            log.info("lease record %s was removed before it was written", self._path(name))
            return False
        return True

    def update(self, solution_key: str, record: LeaseRecord) -> None:
        """Replace the record's ``record.json`` (a renewal or the release) by a rename, never a half-written
        file. NotFoundError when its directory is gone."""
        assert record.holder is not None, "agentvm writes only records it holds"
        name = lease_dir_name(solution_key, record.generation)
        temporary = f".tmp-{name}-{record.holder.token}.json"
        self._put(temporary, record_json(solution_key, record))
        try:
            self._move(temporary, (name, RECORD_FILE))
        except AgentvmError as exc:
            if isinstance(exc, NotFoundError) or fault_name(exc) in {"FileNotFound", "CannotAccessFile"}:
                raise NotFoundError(
                    f"lease record {self._path(name)} on {self.session.url} is gone: it was removed"
                ) from exc
            raise

    def remove(self, record: LeaseRecord) -> bool:
        """Delete a record agentvm wrote (its directory); False when it was gone already."""
        if not record.ours:
            raise ConfigurationError(f"{self._path(record.key)} was not written by agentvm; left alone")
        try:
            self._delete(self._path(record.key))
        except NotFoundError:
            return False
        except AgentvmError as exc:
            if fault_name(exc) in {"FileNotFound", "CannotDeleteFile"}:
                return False
            raise
        return True


def _session_id(session: Session) -> str:
    session_id = session.content.sessionManager._stub.GetSessionId()
    if not session_id:
        raise AuthenticationError(f"not logged in to {session.url}: log in first")
    return str(session_id)
