"""The Training tab: choose data, model and recipe, train in a worker, watch the loss and previews."""
