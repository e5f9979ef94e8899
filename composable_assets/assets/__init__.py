"""Asset factories: sources, models, audiences, deltas and syncs built from a project folder."""
