"""The engine, pure torch (no Qt, no dialogs): the seeds' formulas and all that trains and samples with them."""
