"""The declarative file (YAML) turned into validated desired state; errors name file, line and field.

Imports agentvm.model only.
"""
