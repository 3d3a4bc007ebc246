"""Integrators: the leapfrog step, the two-body fast path, dt policies (fixed, analytic and its
variants), and the batched simulation loop that drives a policy and records the trajectory."""
