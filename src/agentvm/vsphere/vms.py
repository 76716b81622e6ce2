"""VM operations: power on/off, destroy, extraConfig. Each reads first and is a no-op when already done.

Used by the engine (agent VM lifecycle: power, redeploy, per-host ``guestinfo.*`` values) and tests.
``label`` arguments name the VM in messages (``vm-42 (/DC0/vm/agent (1))``); they default to the moid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyVmomi import vim

from agentvm.model.agency import MoRef, PowerState
from agentvm.model.errors import ConfigurationError, NotFoundError
from agentvm.vsphere.collector import PC, container_view, paged, property_spec, read_one, view_filter_spec
from agentvm.vsphere.session import Session
from agentvm.vsphere.tasks import wait_for_task


def _vm(session: Session, vm: MoRef) -> Any:
    if vm.type != "VirtualMachine":
        raise ConfigurationError(f"{vm} is not a VM (VirtualMachine)")
    return session.mo(vm)


def power_state(session: Session, vm: MoRef) -> PowerState:
    """The VM's power state (one call). NotFoundError when it no longer exists."""
    props = read_one(session, _vm(session, vm), ["runtime.powerState"])
    return PowerState(str(props.get("runtime.powerState", PowerState.POWERED_OFF.value)))


def ensure_powered_on(
    session: Session, vm: MoRef, *, label: str | None = None, timeout: float = 300.0
) -> bool:
    """Power the VM on unless it is on already; True if it was powered on now."""
    if power_state(session, vm) is PowerState.POWERED_ON:
        return False
    task = _vm(session, vm).PowerOnVM_Task()
    wait_for_task(session, task, what=f"power on {label or vm.value}", timeout=timeout)
    return True


def ensure_powered_off(
    session: Session, vm: MoRef, *, label: str | None = None, timeout: float = 300.0
) -> bool:
    """Power the VM off (hard) unless it is off already; True if it was powered off now."""
    if power_state(session, vm) is PowerState.POWERED_OFF:
        return False
    task = _vm(session, vm).PowerOffVM_Task()
    wait_for_task(session, task, what=f"power off {label or vm.value}", timeout=timeout)
    return True


def destroy(session: Session, vm: MoRef, *, label: str | None = None, timeout: float = 300.0) -> bool:
    """Power off and delete the VM from disk; False if it does not exist (already gone)."""
    try:
        ensure_powered_off(session, vm, label=label, timeout=timeout)
    except NotFoundError:
        return False
    task = _vm(session, vm).Destroy_Task()
    wait_for_task(session, task, what=f"delete {label or vm.value}", timeout=timeout)
    return True


def read_extra_config(session: Session, vm: MoRef, *, prefix: str = "") -> dict[str, str]:
    """The VM's extraConfig entries whose key starts with ``prefix`` (one call)."""
    options = read_one(session, _vm(session, vm), ["config.extraConfig"]).get("config.extraConfig") or ()
    return {
        str(o.key): "" if o.value is None else str(o.value) for o in options if str(o.key).startswith(prefix)
    }


def ensure_extra_config(
    session: Session,
    vm: MoRef,
    values: Mapping[str, str],
    *,
    label: str | None = None,
    timeout: float = 300.0,
) -> bool:
    """Set extraConfig keys to ``values`` (an empty value removes a key); True if a reconfigure was needed."""
    current = read_extra_config(session, vm)
    changes = {k: v for k, v in values.items() if current.get(k, "") != v}
    if not changes:
        return False
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in changes.items()])
    task = _vm(session, vm).ReconfigVM_Task(spec=spec)
    wait_for_task(session, task, what=f"reconfigure extraConfig of {label or vm.value}", timeout=timeout)
    return True


def find_marked(session: Session, extension_key: str | None, marks: Mapping[str, str]) -> list[MoRef]:
    """Every VM managed by ``extension_key`` whose extraConfig holds all of ``marks`` (key = value);
    ``extension_key`` None: every VM (a standalone host keeps no managedBy; it has few VMs).

    Two bulk reads whatever the inventory size: ``config.managedBy`` of every VM, then ``config.extraConfig``
    of those managed by the key. Used after a failed import that named no VM (``ovf.import_ovf``) to find
    what vCenter created anyway. A key set twice (vcsim appends instead of replacing) counts as its last
    value, as vCenter would have replaced it.
    """
    with container_view(session, [vim.VirtualMachine]) as view:
        spec = view_filter_spec(view, [property_spec(vim.VirtualMachine, ["config.managedBy"])])
        with paged(session, spec) as items:
            candidates = [
                o.obj
                for o in items
                if extension_key is None
                or getattr(o.get("config.managedBy"), "extensionKey", None) == extension_key
            ]
    if not candidates:
        return []
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=obj, skip=False) for obj in candidates],
        propSet=[property_spec(vim.VirtualMachine, ["config.extraConfig"])],
    )
    found: list[MoRef] = []
    with paged(session, spec) as items:
        for item in items:
            values = {
                str(o.key): "" if o.value is None else str(o.value)
                for o in item.get("config.extraConfig") or ()
            }
            if all(values.get(k) == v for k, v in marks.items()):
                found.append(MoRef(str(item.obj._wsdlName), str(item.obj._moId)))
    return found


def ensure_on_host(
    session: Session,
    vm: MoRef,
    host: MoRef,
    *,
    pool: MoRef | None = None,
    label: str | None = None,
    timeout: float = 300.0,
) -> bool:
    """Move the VM onto ``host`` (RelocateVM) unless it runs there already; True if it was moved now.

    ``pool``: the resource pool it belongs in on ``host`` (an agent's pool); without one a VM that must
    change compute resource goes to the root pool of ``host``'s. Used by the controller and
    ``agentvm resolve`` to bring back an agent VM moved to another host by hand. NotFoundError when the
    VM or the host no longer exists.
    """
    props = read_one(session, _vm(session, vm), ["runtime.host", "resourcePool"])
    current = props.get("runtime.host")
    if current is not None and current._moId == host.value:
        return False
    if pool is None:
        target = read_one(session, session.mo(host), ["parent"]).get("parent")
        vm_pool = props.get("resourcePool")
        owner = read_one(session, vm_pool, ["owner"]).get("owner") if vm_pool is not None else None
        if target is not None and (owner is None or owner._moId != target._moId):
            root = read_one(session, session.mo(MoRef(target._wsdlName, target._moId)), ["resourcePool"])
            pool = _ref(root.get("resourcePool"))
    spec = vim.vm.RelocateSpec(host=session.mo(host), pool=session.mo(pool) if pool is not None else None)
    task = _vm(session, vm).RelocateVM_Task(spec=spec)
    wait_for_task(session, task, what=f"move {label or vm.value} back to {host.value}", timeout=timeout)
    return True


def _ref(value: Any) -> MoRef | None:
    return MoRef(value._wsdlName, value._moId) if value is not None else None
