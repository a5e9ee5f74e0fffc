"""The Schedule dock: edit the noise schedule and see β_t, ᾱ_t, β̃_t and log SNR against t."""
