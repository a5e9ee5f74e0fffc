"""The seeds' formulas, one file each: schedule, forward, reverse, samplers, objective, guidance, bound."""
