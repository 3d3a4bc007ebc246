"""Integrators: the leapfrog step, the two-body fast path, the dt policy interface (``DtPolicy``,
in ``dt_policy``) and its policies (fixed, analytic and its variants), and the batched
simulation loop that drives a policy and records the trajectory."""
