"""Reports of a run: the curves it plots, report figures, movies, and the helper process that
draws them off the main process."""
