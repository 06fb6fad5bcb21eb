"""The bottom layer: what every other layer may use. Errors a user can cause, files written
atomically, devices and their memory, and dataclass settings read from mappings."""
