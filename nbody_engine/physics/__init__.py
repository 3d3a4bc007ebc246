"""Physics in torch, batch-first (B, N, D), G = 1: the state, gravity (forces, potential, energies,
momenta, angular momentum, the external field, pair quantities), initial conditions, and the
run-time choices a config makes (device, dtype, seed, the force law)."""
