"""When a pending EAM hook is answered (again): the one policy of ``apply``'s wait and the controller. Pure.

EAM reports a hook as pending until it has processed MarkAsAvailable, so the same hook is seen pending for
a while after it was answered: that is a duplicate, not a new hook, and answering it again would configure
the VM twice. A hook still pending ``REANSWER_AFTER`` seconds after its answer is answered again (the answer
was lost, or the VM was replaced under the same agent). A hook is known by (agent id, hook VM moid), so a
new VM of the same agent (an upgrade) is a new hook.

Callers: ``controller.solution`` (apply's wait) and ``controller.reconcile`` (each poll); both keep the
``answered`` times themselves (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from ipaddress import IPv4Address

from agentvm.core.ipplan import render_per_host
from agentvm.core.plan import AnswerHook
from agentvm.model.agency import AgentRuntime, HookState, MoRef
from agentvm.model.desired import AgencySpec, ScopeHost
from agentvm.model.network import ADDRESS_KEY, AGENCY_KEY

REANSWER_AFTER = 10.0  # a hook still pending this long after MarkAsAvailable is answered again

HookKey = tuple[str, str]  # (agent id, hook VM moid)


def hook_key(agent: AgentRuntime) -> HookKey:
    """The key of ``agent``'s pending hook; ValueError when it has none."""
    if agent.hook is None:
        raise ValueError(f"agent {agent.agent} has no pending hook")
    return agent.agent, agent.hook.vm.value


def answer_due(answered_at: float | None, now: float, after: float = REANSWER_AFTER) -> bool:
    """True when a pending hook answered at ``answered_at`` (None: never) is to be answered at ``now``."""
    return answered_at is None or now - answered_at >= after


def hooks_due(
    agents: Iterable[AgentRuntime],
    answered: Mapping[HookKey, float],
    now: float,
    after: float = REANSWER_AFTER,
    *,
    fresh: Collection[str] | None = None,
) -> list[AgentRuntime]:
    """The agents of ``agents`` whose pending hook is to be answered now, in the order given.

    ``fresh``: the agents read by the observation that gave ``agents`` (None: all of them). An answered hook
    is answered again only when such a read still shows it pending: an agent as last read before its answer
    shows the hook it had then, which says nothing of the answer.
    """
    return [
        a
        for a in agents
        if a.hook is not None
        and answer_due(answered.get(hook_key(a)), now, after)
        and (fresh is None or hook_key(a) not in answered or a.agent in fresh)
    ]


def answer_for(
    spec: AgencySpec,
    vm: MoRef,
    host: ScopeHost,
    address: IPv4Address | None,
    *,
    agent: str = "",
    state: HookState = HookState.PROVISIONED,
) -> AnswerHook:
    """The answer to a hook of ``spec``'s agent on ``host``: after provisioning, the host's values for ``vm``
    (the agency's ``perHost`` templates as vApp properties, each also as ``guestinfo.<key>``, and the
    planned ``address`` with the agency's name in ``guestinfo.agentvm.*``, read back on the next
    observation so the IP plan stays stable); after a power-on hook, nothing to write."""
    if state is HookState.POWERED_ON:
        return AnswerHook(spec.name, agent, vm, state, host.moid, host, address=address)
    properties = {p.key: p.value for p in render_per_host(spec, host, address)}
    extra = {f"guestinfo.{k}": v for k, v in properties.items()}
    if address is not None:
        extra[ADDRESS_KEY] = str(address)
        extra[AGENCY_KEY] = spec.name
    return AnswerHook(
        spec.name, agent, vm, state, host.moid, host, tuple(properties.items()), tuple(extra.items()), address
    )
