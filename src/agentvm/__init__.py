"""agentvm: one agent VM on every ESXi host, as a vCenter solution over ESX Agent Manager (EAM)."""

__version__ = "0.1.0"
