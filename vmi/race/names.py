"""The race explorer's names that the command line needs before anything runs:
kept here, apart from the explorer, so ``vmi --help`` imports no processor."""

#: The invariants, in the order reports list them (docs/race.md).
INVARIANTS = ("lost-work", "nesting", "exactly-once", "integrity", "mutual-exclusion",
              "spin-irq", "liveness", "transparency")
#: The deepest exhaustive sweep: n**depth schedules for a path of n boundaries
#: (a 49-boundary path: 2,401 at depth 2, 117,649 at depth 3).
MAX_DEPTH = 3
