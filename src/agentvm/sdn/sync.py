"""Observe the SDN side and carry out a netsync plan: the I/O half of ``agentvm.core.netsync``.

Called by ``agentvm netsync plan|apply`` and the controller's network sync:

    state = read_controller_state(api)
    ports, unreachable = read_ports(agents, netsync.port_candidates(inventory, state))
    result = apply_plan(netsync.plan(inventory, state, ports), api, agents)

Every call is idempotent, so a plan cut short by a restart is finished by the next sync. One failing item
never stops the others: failures are collected in the ``SyncResult`` (transient ones to retry with backoff,
configuration ones to report) and items that depend on a failed one are skipped, not attempted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agentvm.model.errors import AgentvmError, TransientError
from agentvm.model.network import (
    ControllerState,
    ItemKey,
    ObjectCall,
    ObjectVerb,
    PortAction,
    PortChange,
    SdnInstanceIp,
    SdnObject,
    SdnVirtualMachine,
    SdnVirtualNetwork,
    SdnVmi,
    SyncItem,
    SyncPlan,
    VrouterPort,
)
from agentvm.sdn import wire
from agentvm.sdn.config_api import ConfigApiClient
from agentvm.sdn.http import ApiConflict
from agentvm.sdn.vrouter import VrouterAgentClient

A = TypeVar("A")
MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]]
"""How to run one phase's independent calls: ``map`` (default, in order) or an executor's ``map``."""


@dataclass(frozen=True)
class ApplyFailure:
    """One planned item that failed: the item itself (its key for retries, its label for a person)."""

    subject: SyncItem
    message: str
    transient: bool  # retry with backoff; False: fix the input (or the other owner's object) first

    @property
    def key(self) -> ItemKey:
        return self.subject.key

    @property
    def item(self) -> str:
        """The item for a person: ``create virtual-network 1b2c... (default-domain:default-project:pg-1)``."""
        return self.subject.label()


@dataclass(frozen=True)
class SyncResult:
    done: int
    failures: tuple[ApplyFailure, ...] = ()
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.skipped


def read_controller_state(api: ConfigApiClient) -> ControllerState:
    """Everything netsync compares against: the project's uuid and all objects of the four types."""
    return ControllerState(
        project_uuid=api.project_uuid(),
        virtual_networks=api.list(SdnVirtualNetwork),
        virtual_machines=api.list(SdnVirtualMachine),
        vmis=api.list(SdnVmi),
        instance_ips=api.list(SdnInstanceIp),
    )


def read_ports(
    agents: Mapping[str, VrouterAgentClient], candidates: Mapping[str, Iterable[str]]
) -> tuple[dict[str, dict[str, VrouterPort]], dict[str, str]]:
    """The ports each host's agent holds among ``candidates`` (``netsync.port_candidates``).

    Returns (host -> port id -> port, host -> why it could not be read). A host with no agent client or
    whose agent does not answer is in the second mapping and absent from the first.
    """
    ports: dict[str, dict[str, VrouterPort]] = {}
    unreachable: dict[str, str] = {}
    for host, ids in sorted(candidates.items()):
        agent = agents.get(host)
        if agent is None:
            unreachable[host] = f"no vRouter agent address known for host {host}"
            continue
        found: dict[str, VrouterPort] = {}
        try:
            for port_id in sorted(ids):
                port = agent.get_port(port_id)
                if port is not None:
                    found[port_id] = port
        except AgentvmError as exc:
            unreachable[host] = str(exc)
            continue
        ports[host] = found
    return ports, unreachable


def _call(verb: ObjectVerb) -> Callable[[SdnObject], ObjectCall]:
    return lambda obj: ObjectCall(verb, wire.type_name(obj), obj)


class _Run:
    """Bookkeeping of one ``apply_plan`` call."""

    def __init__(self) -> None:
        self.done = 0
        self.skipped = 0
        self.failures: list[ApplyFailure] = []
        self.failed: set[str] = set()  # uuids whose create/delete failed: dependents are skipped

    def fail(self, subject: SyncItem, key: str, error: AgentvmError) -> None:
        self.failed.add(key)
        self.failures.append(ApplyFailure(subject, str(error), isinstance(error, TransientError)))


def _attempt(call: Callable[[], object]) -> AgentvmError | None:
    try:
        call()
    except AgentvmError as exc:
        return exc
    return None


def _depends_on(obj: SdnObject) -> tuple[str, ...]:
    if isinstance(obj, SdnVmi):
        return tuple(u for u in (obj.vn_uuid, obj.vm_uuid) if u)
    if isinstance(obj, SdnInstanceIp):
        return tuple(u for u in (obj.vn_uuid, obj.vmi_uuid) if u)
    return ()


def apply_plan(
    plan: SyncPlan,
    api: ConfigApiClient,
    agents: Mapping[str, VrouterAgentClient],
    state: ControllerState | None = None,
    map_fn: MapFn = map,
    before_ports: Callable[[], Collection[str]] | None = None,
) -> SyncResult:
    """Carry out ``plan``: old ports off, controller deletes, creates, updates, then ports on.

    Within a phase calls are independent, so ``map_fn`` may run them concurrently (e.g. a thread pool's
    ``map`` passed by the controller or a benchmark); phases run one after the other. ``state`` (the
    controller state the plan was made from) fills in the fq names of refs. Never raises for a failed item.

    ``before_ports`` is called once the old ports are off the agents and the controller is changed, before
    any port is added or enabled: the network sync sets the DV port VLANs there (a VLAN an old port held is
    free by then) and returns the interfaces (port ids) whose DV port does not carry its VLAN. Their ports
    are neither added nor enabled (counted as skipped): an agent told a VLAN the DV port does not tag would
    take that NIC's traffic for another interface's.
    """
    run = _Run()
    fq_names: dict[str, tuple[str, ...]] = {}
    if state is not None:
        fq_names.update((vn.uuid, vn.fq_name) for vn in state.virtual_networks)
    fq_names.update((o.uuid, o.fq_name) for o in plan.create if isinstance(o, SdnVirtualNetwork))

    def phase(
        items: Sequence[A],
        subject: Callable[[A], SyncItem],
        key: Callable[[A], str],
        call: Callable[[A], object],
    ) -> None:
        def attempt(item: A) -> AgentvmError | None:
            return _attempt(lambda: call(item))

        errors: list[AgentvmError | None] = list(map_fn(attempt, items))
        for item, error in zip(items, errors, strict=True):
            if error is None:
                run.done += 1
            else:  # the failed item's value is made only for a failure
                run.fail(subject(item), key(item), error)

    def port_subject(change: PortChange) -> SyncItem:
        return change

    def port_call(change: PortChange) -> None:
        agent = agents.get(change.host)
        if agent is None:
            raise TransientError(f"no vRouter agent address known for host {change.host}")
        if change.action is PortAction.ADD:
            agent.add_port(change.port)
        elif change.action is PortAction.ENABLE:
            agent.enable_port(change.port.id)
        elif change.action is PortAction.DISABLE:
            agent.disable_port(change.port.id)
        else:
            agent.delete_port(change.port.id)

    port_deletes = [c for c in plan.ports if c.action is PortAction.DELETE]
    phase(port_deletes, port_subject, lambda c: f"port-delete:{c.port.id}", port_call)

    # Deletes by type, reverse dependency order. An interface whose old port could not be removed stays
    # (the agent would otherwise keep a port of an interface the controller no longer has).
    for kind in (SdnInstanceIp, SdnVmi, SdnVirtualMachine, SdnVirtualNetwork):
        batch = []
        for obj in plan.delete:
            if not isinstance(obj, kind):
                continue
            if f"port-delete:{obj.uuid}" in run.failed:
                run.skipped += 1
                continue
            batch.append(obj)
        phase(batch, _call(ObjectVerb.DELETE), lambda o: o.uuid, api.delete)

    def create(obj: SdnObject) -> None:
        try:
            api.create(obj, fq_names)
        except ApiConflict:
            # Already there (an earlier run was cut short after the server committed): make it right.
            body = api.read_raw(wire.type_name(obj), obj.uuid)
            if body is None or wire.decode_creator(body) != api.config.creator:
                raise
            api.update(obj, fq_names)

    for kind in (SdnVirtualNetwork, SdnVirtualMachine, SdnVmi, SdnInstanceIp):
        batch = []
        for obj in plan.create:
            if not isinstance(obj, kind):
                continue
            if any(dep in run.failed for dep in _depends_on(obj)):
                run.skipped += 1
                run.failed.add(obj.uuid)
                continue
            batch.append(obj)
        phase(batch, _call(ObjectVerb.CREATE), lambda o: o.uuid, create)

    phase(
        list(plan.update),
        _call(ObjectVerb.UPDATE),
        lambda o: o.uuid,
        lambda o: api.update(o, fq_names),
    )

    unconfirmed = set(before_ports()) if before_ports is not None else set()
    for action in (PortAction.ADD, (PortAction.ENABLE, PortAction.DISABLE)):
        actions = action if isinstance(action, tuple) else (action,)
        batch_ports = []
        for change in plan.ports:
            if change.action not in actions:
                continue
            if change.port.id in run.failed or f"port:{change.port.id}" in run.failed:
                run.skipped += 1  # its interface (or its add) failed: nothing to add / enable
                continue
            if change.port.id in unconfirmed and change.action is not PortAction.DISABLE:
                run.skipped += 1  # its DV port does not carry the VLAN yet: retried with it
                continue
            batch_ports.append(change)
        phase(batch_ports, port_subject, lambda c: f"port:{c.port.id}", port_call)

    return SyncResult(done=run.done, failures=tuple(run.failures), skipped=run.skipped)
