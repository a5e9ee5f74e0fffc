"""The Sampling tab: pick a model and a sampler, watch x_t, x̂₀ and ε frame by frame; prompts, attention."""
