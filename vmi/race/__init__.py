"""Race exploration (docs/race.md): interrupt schedules and CPU interleavings as data,
machine-checked invariants at every step, exhaustive sweeps through snapshots, and
hypothesis-driven search that shrinks a failure to its smallest schedule."""
