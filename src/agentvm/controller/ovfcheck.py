"""Check an agency's OVF package before EAM gets its URL: reachable, the sha256 the spec names, a real OVF.

Called by ``controller.solution`` while validating ``plan`` / ``apply`` (before anything changes). EAM would
only find a bad URL when it deploys (or refuse it at CreateAgency with InvalidUrl); checking here turns both
into one line naming the agency, the URL and the fix.
"""

from __future__ import annotations

import hashlib

from agentvm.model.desired import AgencySpec
from agentvm.model.errors import ConfigurationError
from agentvm.vsphere.ovf import (
    MAX_DESCRIPTOR_BYTES,
    OvfDescriptor,
    OvfDescriptorError,
    OvfDownloadError,
    open_url,
    parse_descriptor,
)


def check_ovf(agency: AgencySpec, *, timeout: float = 30.0) -> tuple[OvfDescriptor, list[str]]:
    """Download the descriptor, compare its sha256 with ``ovf.sha256`` (when given) and parse it.

    Returns the descriptor and warnings (OVF property keys the spec sets that the package does not declare).
    Raises ConfigurationError: unreachable URL, wrong checksum, not an OVF.
    """
    url = agency.ovf.url
    who = f'agency "{agency.name}"'
    try:
        with open_url(url, timeout=timeout) as (response, _size):
            body = response.read(MAX_DESCRIPTOR_BYTES + 1)
    except OvfDownloadError as exc:
        raise ConfigurationError(
            f"{who}: the OVF {url} cannot be downloaded ({exc.reason}); fix ovf.url or start the "
            "package server that serves it"
        ) from None
    if len(body) > MAX_DESCRIPTOR_BYTES:
        raise ConfigurationError(f"{who}: {url} is larger than {MAX_DESCRIPTOR_BYTES} bytes: not an OVF")
    digest = hashlib.sha256(body).hexdigest()
    if agency.ovf.sha256 is not None and digest != agency.ovf.sha256.lower():
        raise ConfigurationError(
            f"{who}: the OVF {url} has sha256 {digest}, but ovf.sha256 in the spec is {agency.ovf.sha256}; "
            "fix ovf.sha256, or check that the package server serves the package you meant"
        )
    try:
        descriptor = parse_descriptor(body.decode("utf-8-sig", errors="replace"), url)
    except OvfDescriptorError as exc:
        raise ConfigurationError(f"{who}: {exc}") from None
    declared = {p.id for p in descriptor.properties}
    warnings = [
        f"{who}: the OVF {url} declares no property {key!r}; the agent VM gets it as guestinfo.{key} only"
        for key in [*(p.key for p in agency.ovf_properties), *(k for k, _ in agency.per_host)]
        if declared and key not in declared
    ]
    return descriptor, warnings
