"""Generation: flow-matching objectives on the spherical latents (Riemannian and Euclidean),
manifold ODE samplers with classifier-free guidance, and images from a DiT and a decoder."""
