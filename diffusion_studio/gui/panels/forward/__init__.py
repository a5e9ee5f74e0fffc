"""The Forward process tab: scrub t and watch x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, in pixels or a latent space."""
