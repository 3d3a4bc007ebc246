"""Jobs: a resolved config to its run folder: training, simulation, and both in turn."""
