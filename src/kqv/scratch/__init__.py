"""Step 1 of the path: a feed-forward network in NumPy with backpropagation by hand.

Nothing in this package imports torch; the tests compare it against torch autograd.
"""

from kqv.scratch.costs import COSTS, CrossEntropyCost, QuadraticCost
from kqv.scratch.network import Gradients, Network

__all__ = ["COSTS", "CrossEntropyCost", "Gradients", "Network", "QuadraticCost"]
