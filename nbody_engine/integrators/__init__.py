"""Integrators: the leapfrog step, the two-body and pair fast paths, the dt policy interface
(``DtPolicy``, in ``dt_policy``) and its policies (fixed, analytic and its variants), the
time-transformed leapfrog and its time transformations (:mod:`.ttl`), and the batched
simulation loop that drives a policy and records the trajectory."""
