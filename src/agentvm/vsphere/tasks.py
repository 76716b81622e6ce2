"""Wait for a vCenter task by push (``WaitForUpdatesEx`` on ``task.info``), not by polling.

Used by every operation here that starts a ``*_Task`` method, and by the engine for its own tasks (OVF
import, reconfigure, power). A wait first reads the task's ``info`` (one ``RetrievePropertiesEx``): a
task that has ended already (most small ones by the time their call returns) costs nothing more. Waits
for tasks still running share the session's one long-lived property collector (``TaskWaiter``): a
ListView holds the tasks being waited on, and one filter over it reports their ``info``. Such a wait
costs one ``ModifyListView`` (adding its task, and removing the tasks of waits that have ended) plus its
share of the collector's ``WaitForUpdatesEx``, which one waiting thread at a time makes on behalf of all.
Each ``WaitForUpdatesEx`` is bounded so every wait's timeout is honoured. When the collector is lost (the
session expired and was logged in again, vCenter restarted), the next call that notices builds a new one
holding every task still waited on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.model.errors import AgentvmError, TransientError
from agentvm.vsphere.collector import dedicated_collector, read_one
from agentvm.vsphere.faults import to_agentvm_error
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
_MAX_WAIT_SECONDS = 10  # one WaitForUpdatesEx at most; well under the session's HTTP timeout
_FINISHED = frozenset({"success", "error"})

_waiters: weakref.WeakKeyDictionary[Session, TaskWaiter] = weakref.WeakKeyDictionary()
_waiters_lock = threading.Lock()


def wait_for_task(session: Session, task: Any, *, what: str, timeout: float = 300.0) -> Any:
    """Block until ``task`` ends; return ``task.info.result`` (a MoRef for creating tasks, often None).

    ``what`` names the operation and object for messages (``"power on vm-42 (/DC0/vm/agent (1))"``).
    Raises the agentvm error the task's fault maps to (naming ``what``), or TransientError when it has
    not finished within ``timeout`` seconds (it may still be running in vCenter). Safe to call from
    several threads at once on one session: the waits share the session's ``TaskWaiter``.
    """
    return task_waiter(session).wait(task, what=what, timeout=timeout)


def task_waiter(session: Session) -> TaskWaiter:
    """The session's one ``TaskWaiter`` (made on first use; it goes when the session does)."""
    with _waiters_lock:
        waiter = _waiters.get(session)
        if waiter is None:
            waiter = _waiters[session] = TaskWaiter(session)
        return waiter


class TaskWaiter:
    """Every task wait of one session, through one property collector, one ListView and one filter.

    Thread-safe. A waiting thread adds its task to the view itself (that wakes a ``WaitForUpdatesEx`` in
    progress, so nobody waits for the next bound); then either it is the one thread making the
    collector's ``WaitForUpdatesEx`` (the pump), handing every task's end to its waiter, or it waits to be
    told. A task that has ended before it is added still reports its ``info`` on entering the view.
    """

    def __init__(self, session: Session, *, read_first: bool = True) -> None:
        """``read_first``: read a task's ``info`` before anything else, and return at once when it has
        ended (False: every wait goes through the shared collector; tests use it to exercise that path
        on a lab whose tasks end before their call returns)."""
        self._session = session
        self._read_first = read_first
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._build_lock = threading.Lock()  # one rebuild at a time; never taken under _lock
        self._generation = 0  # bumped by every (re)build of the collector
        self._collector: Any = None
        self._view: Any = None
        self._version = ""
        self._pumping = False
        self._tasks: dict[str, Any] = {}  # task id -> task, for every task being waited on
        self._waits: dict[str, int] = {}  # task id -> how many threads wait for it
        self._ended: dict[str, Any] = {}  # task id -> its final info, until its last waiter takes it
        self._gone: list[Any] = []  # tasks nobody waits for any more, removed with the next add

    def wait(self, task: Any, *, what: str, timeout: float) -> Any:
        """``wait_for_task`` for this session."""
        deadline = time.monotonic() + timeout
        task_id = str(getattr(task, "_moId", "?"))
        if self._read_first:
            info = read_one(self._session, task, ["info"]).get("info")
            if info is not None and str(info.state) in _FINISHED:
                return self._outcome(info, what, task_id)
        with self._lock:
            self._tasks[task_id] = task
            self._waits[task_id] = self._waits.get(task_id, 0) + 1
            generation = self._generation
            view = self._view
            gone, self._gone = self._gone, []
        try:
            self._add(task, view, generation, gone)
            info = self._await(task_id, deadline)
        finally:
            self._release(task_id, task)
        if info is None:
            raise TransientError(
                f"{what}: task {task_id} did not finish within {timeout:g} s; it may still be running "
                "(see Recent Tasks in vCenter); retry later"
            )
        return self._outcome(info, what, task_id)

    def _outcome(self, info: Any, what: str, task_id: str) -> Any:
        """The result of a task that ended (``info``), or the agentvm error its fault maps to."""
        if str(info.state) == "success":
            return info.result
        fault = info.error
        if fault is None:
            raise TransientError(f"{what}: task {task_id} failed without saying why; retry")
        raise to_agentvm_error(fault, url=self._session.url, what=f"{what} (task {task_id})") from fault

    # -- adding and removing tasks ---------------------------------------------------------------

    def _add(self, task: Any, view: Any, generation: int, gone: list[Any]) -> None:
        if view is not None:
            try:
                unresolved = view.ModifyListView(add=[task], remove=gone or None)
            except AgentvmError as exc:
                log.info("%s: the task collector is gone (%s); making a new one", self._session.url, exc)
            else:
                self._check_resolved(task, unresolved)
                return
        if self._rebuild(generation):
            return  # the new view was made holding this task (it was registered before)
        with self._lock:  # another thread rebuilt meanwhile, perhaps from a list made before this task
            view = self._view
        if view is not None:
            self._check_resolved(task, view.ModifyListView(add=[task]))

    def _check_resolved(self, task: Any, unresolved: Any) -> None:
        if any(getattr(obj, "_moId", None) == task._moId for obj in unresolved or ()):
            # vCenter has no such task (any more): the old way names what went wrong
            with self._lock:
                self._ended.setdefault(task._moId, _Missing(task))

    def _rebuild(self, generation: int) -> bool:
        """Make a new collector, view and filter holding every task waited on, unless another thread has
        done so since ``generation``; True if this call made it. Raises the agentvm error of a failure."""
        with self._build_lock:
            with self._lock:
                if self._generation != generation:
                    return False
                old = self._collector
                tasks = list(self._tasks.values())
            if old is not None:
                with contextlib.suppress(AgentvmError):
                    old.DestroyPropertyCollector()
            content = self._session.content
            collector = content.propertyCollector.CreatePropertyCollector()
            view = content.viewManager.CreateListView(obj=tasks)
            traverse = PC.TraversalSpec(name="tasks", path="view", skip=False, type=vim.view.ListView)
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"], all=False)],
            )
            collector.CreateFilter(spec, partialUpdates=False)
            with self._lock:
                self._collector, self._view, self._version = collector, view, ""
                self._generation += 1
                self._changed.notify_all()
            return True

    def _release(self, task_id: str, task: Any) -> None:
        with self._lock:
            left = self._waits.get(task_id, 1) - 1
            if left > 0:
                self._waits[task_id] = left
                return
            self._waits.pop(task_id, None)
            self._tasks.pop(task_id, None)
            self._ended.pop(task_id, None)
            if self._view is not None:
                self._gone.append(task)

    # -- waiting -----------------------------------------------------------------------------------

    def _await(self, task_id: str, deadline: float) -> Any:
        """The task's final info, or None at the deadline. One thread at a time pumps for all."""
        failures = 0
        while True:
            with self._lock:
                while True:
                    info = self._ended.get(task_id)
                    if info is not None:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    if not self._pumping:
                        self._pumping = True
                        collector, version, generation = self._collector, self._version, self._generation
                        break
                    self._changed.wait(remaining)
            if info is not None:
                return info.read(self._session, deadline) if isinstance(info, _Missing) else info
            try:
                if collector is None:
                    raise TransientError(f"{self._session.url}: no task collector yet")
                wait = max(1, min(_MAX_WAIT_SECONDS, int(remaining + 0.999)))
                update = collector.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
            except AgentvmError as exc:
                with self._lock:
                    self._pumping = False
                    self._changed.notify_all()
                failures += 1
                if failures > 1:
                    raise
                log.info("%s: the task collector is gone (%s); making a new one", self._session.url, exc)
                self._rebuild(generation)
                continue
            failures = 0
            with self._lock:
                self._pumping = False
                if update is not None and self._generation == generation:
                    self._version = update.version
                    for ended_id, info in _ended_infos(update):
                        if ended_id in self._tasks:
                            self._ended[ended_id] = info
                self._changed.notify_all()


class _Missing:
    """A task the view could not add: read it the old way, which names why (gone, or never was)."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def read(self, session: Session, deadline: float) -> Any:
        return _wait_alone(session, self.task, deadline)


def _wait_alone(session: Session, task: Any, deadline: float) -> Any:
    """The task's final info through a collector of its own, or None at the deadline."""
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=task, skip=False)],
        propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"], all=False)],
    )
    with dedicated_collector(session) as pc:
        pc.CreateFilter(spec, partialUpdates=False)
        version = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = max(1, min(_MAX_WAIT_SECONDS, int(remaining + 0.999)))
            update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
            if update is None:
                continue  # maxWaitSeconds elapsed with no change
            version = update.version
            for _, info in _ended_infos(update):
                return info


def _ended_infos(update: Any) -> list[tuple[str, Any]]:
    """(task id, info) of every task this update shows ended (its latest info, if several)."""
    out: dict[str, Any] = {}
    for filter_update in update.filterSet or ():
        for obj_update in filter_update.objectSet or ():
            for change in obj_update.changeSet or ():
                if change.name == "info" and change.val is not None and str(change.val.state) in _FINISHED:
                    out[str(obj_update.obj._moId)] = change.val
    return list(out.items())
