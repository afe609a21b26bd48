"""Training: one loop for every kqv model, its optimiser and schedule, and checkpoints."""
