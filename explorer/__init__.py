"""The nbody explorer dashboard (Panel). Arrives with the explorer issue."""
