"""Generation: images from a DiT and a decoder, each a function of (seed, sample index); the flow itself
(losses, solvers, manifolds) is ``dinosae.flow``."""
