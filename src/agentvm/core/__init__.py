"""Pure decisions: desired vs observed -> actions, IP/VLAN planning, heal policy, netsync mapping.

No I/O, no clock, no threads. Imports agentvm.model only.
"""
