"""Write it yourself: each step of the path as an exercise — a skeleton to fill in, and a checker (`kqv exercise`).

- `framework`: Check, Failure, the comparisons that say what differs, running checks on a learner's module.
- `exercises/`: one module per exercise, in path order (see `kqv.exercise.registry`).
"""
