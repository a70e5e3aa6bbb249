"""Training objectives: each turns (params, batch, rng) into loss sums for the shared train step."""
