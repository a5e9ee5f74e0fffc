"""The machine: device facts, and the choices measured on it (memory layout, precision, time estimates)."""
