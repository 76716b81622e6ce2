"""Wait for a vCenter task by push (``WaitForUpdatesEx`` on ``task.info``), not by polling.

Used by every operation here that starts a ``*_Task`` method, and by the engine for its own tasks (OVF
import, reconfigure, power). Each wait has a dedicated property collector, destroyed at the end even on a
timeout or an exception, and each ``WaitForUpdatesEx`` is bounded so the overall timeout is honoured.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyVmomi import vim, vmodl

from agentvm.model.errors import TransientError
from agentvm.vsphere.collector import dedicated_collector
from agentvm.vsphere.faults import to_agentvm_error
from agentvm.vsphere.session import Session

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
_MAX_WAIT_SECONDS = 10  # one WaitForUpdatesEx at most; well under the session's HTTP timeout


def wait_for_task(session: Session, task: Any, *, what: str, timeout: float = 300.0) -> Any:
    """Block until ``task`` ends; return ``task.info.result`` (a MoRef for creating tasks, often None).

    ``what`` names the operation and object for messages (``"power on vm-42 (/DC0/vm/agent (1))"``).
    Raises the agentvm error the task's fault maps to (naming ``what``), or TransientError when it has
    not finished within ``timeout`` seconds (it may still be running in vCenter).
    """
    deadline = time.monotonic() + timeout
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=task, skip=False)],
        propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"], all=False)],
    )
    task_id = getattr(task, "_moId", "?")
    with dedicated_collector(session) as pc:
        pc.CreateFilter(spec, partialUpdates=False)
        version = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(
                    f"{what}: task {task_id} did not finish within {timeout:g} s; it may still be running "
                    "(see Recent Tasks in vCenter); retry later"
                )
            wait = max(1, min(_MAX_WAIT_SECONDS, int(remaining + 0.999)))
            update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
            if update is None:
                continue  # maxWaitSeconds elapsed with no change
            version = update.version
            info = _latest_info(update)
            if info is None:
                continue
            state = str(info.state)
            if state == "success":
                return info.result
            if state == "error":
                fault = info.error
                if fault is None:
                    raise TransientError(f"{what}: task {task_id} failed without saying why; retry")
                raise to_agentvm_error(fault, url=session.url, what=f"{what} (task {task_id})") from fault


def _latest_info(update: Any) -> Any:
    info = None
    for filter_update in update.filterSet or ():
        for obj_update in filter_update.objectSet or ():
            for change in obj_update.changeSet or ():
                if change.name == "info" and change.val is not None:
                    info = change.val
    return info
