"""A run on disk: the run directory (its files, lock and writers), checkpoints, a checkpoint's
learned policy, and the progress log a follower reads."""
