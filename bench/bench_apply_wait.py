"""What ``agentvm apply`` costs while it waits on a state that needs action (it heals, or stops).

On the lab's 6 hosts (2 clusters x 3) with the contrail example, two scenarios, each through
``Solution.apply`` as the CLI runs it:

- passive: every host uses its own AgentVM network and none has one, so EAM raises NoAgentVmNetwork
  (a person must act): apply stops at its first poll that shows the issue;
- active: while apply waits, the first agent VM EAM calls green is powered off behind its back: apply
  resolves VmPoweredOff with the controller's heal policy and ends green.

The table shows whether apply ended green, its wall time, its polls and its EAM and vim25 calls (the test's
own calls go through a session of their own and are not counted). Before apply healed while it waited, the
passive case sat out the whole timeout: 600 s and 2,631 EAM calls on these 6 hosts; the active case stayed
red until then.
Run: .venv/bin/python bench/bench_apply_wait.py [timeout seconds]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from agentvm.backends.eam import EamBackend
from agentvm.controller.solution import ApplyReport, Solution
from agentvm.lab.world import Lab, LabInfo
from agentvm.model.connection import Secret, VCenterConnection
from agentvm.spec import load_spec
from agentvm.vsphere.session import Session
from agentvm.vsphere.vms import ensure_powered_off

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "contrail.yaml"


def _session(info: LabInfo) -> Session:
    vc = info.vcsim
    return Session.connect(
        VCenterConnection(
            url=vc.url, username=vc.username, password=Secret(vc.password), thumbprint=vc.thumbprint
        )
    )


def run(scenario: str, timeout: float) -> tuple[ApplyReport, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-apply-wait-"))
    lab = Lab()
    info = lab.start()
    try:
        text = EXAMPLE.read_text()
        if scenario == "passive":
            text = text.replace("network: VM Network", "network: host")
        spec = tmp / "contrail.yaml"
        spec.write_text(text)
        desired = load_spec(spec, env={**os.environ, **info.env()})
        own, tester = _session(info), _session(info)
        view = EamBackend(tester)
        off: list[str] = []

        def sleep(seconds: float) -> None:
            time.sleep(seconds)
            if scenario != "active" or off:
                return
            status = view.observe("contrail")
            green = [a.vm for a in status.agents if a.status.value == "green" and a.vm] if status else []
            if not green:
                return
            ensure_powered_off(tester, green[0])
            off.append(green[0].value)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until EAM raises the issue apply must act on
                now = view.observe("contrail")
                if now is not None and any(i.kind.value == "VmPoweredOff" for i in now.issues):
                    return
                time.sleep(0.1)

        with Solution(desired, own, sleep=sleep, state_dir=tmp / "state") as solution:
            started = time.monotonic()
            report = solution.apply(timeout=timeout)
            seconds = time.monotonic() - started
        tester.logout()
        own.logout()
        return report, seconds
    finally:
        lab.stop()


def main() -> None:
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    print(f"{'scenario':<10} {'green':>6} {'seconds':>8} {'polls':>6} {'EAM':>6} {'vim25':>6}")
    for scenario in ("passive", "active"):
        report, seconds = run(scenario, timeout)
        print(
            f"{scenario:<10} {report.green!s:>6} {seconds:>8.1f} {report.polls:>6} {report.eam_calls:>6} "
            f"{report.vim_calls:>6}"
        )


if __name__ == "__main__":
    main()
