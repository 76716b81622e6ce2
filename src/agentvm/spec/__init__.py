"""The declarative file (YAML) turned into validated desired state; errors name file, line and field.

``load_spec(path)`` → ``agentvm.model.desired.DesiredState`` or ``SpecError`` (one line per problem).
The schema is described in docs/spec.md. Imports agentvm.model only.
"""

from agentvm.spec.errors import Problem, SpecError
from agentvm.spec.loader import API_VERSION, load_spec, load_spec_text

__all__ = ["API_VERSION", "Problem", "SpecError", "load_spec", "load_spec_text"]
