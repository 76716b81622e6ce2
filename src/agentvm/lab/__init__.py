"""The local simulated world for demos and tests: vcsim, the EAM emulator, package server, SDN emulators.

Nothing imports the lab but the CLI and the tests.
"""
