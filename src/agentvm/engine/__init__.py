"""agentvm's own EAM-equivalent agent lifecycle on plain vim25 (deploy, hooks, issues, remediation)."""
