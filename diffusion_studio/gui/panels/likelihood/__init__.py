"""The Likelihood tab: the variational bound L_VLB of a model, term by term, in bits per dimension."""
