"""The ESX Agent Manager adapter: EAM SOAP at /eam/sdk, sharing the vCenter session cookie.

Imports agentvm.model only.
"""
