"""Integrators: the leapfrog step, the two-body fast path, dt policies (fixed, analytic and its
variants), the time-transformed leapfrog and its time transformations (:mod:`.ttl`), and the
batched simulation loop that drives a policy and records the trajectory."""
