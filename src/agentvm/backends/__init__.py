"""What the controller needs from something that runs agents: one protocol, two implementations."""
