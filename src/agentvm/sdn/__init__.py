"""The SDN adapter: HTTP clients for the Tungsten Fabric config API and the vRouter agent port API.

Imports agentvm.model only.
"""
