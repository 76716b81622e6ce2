"""The vim25 adapter: the only code that talks to vCenter/ESXi over pyVmomi.

Imports agentvm.model only.
"""
