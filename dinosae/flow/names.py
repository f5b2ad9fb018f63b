"""The flow's vocabulary: the names a config file or a flag may give its choices.

Plain data, without torch, so that the command line lists them before any model exists; the modules
that build from a name (``make_manifold``, ``make_time_sampler``, the loss and the solvers) refuse any
other, naming the choices.
"""

# The spaces a flow runs in (dinosae.flow.manifolds): the product of spheres (Riemannian flow matching), or R^D.
MANIFOLDS = ("sphere", "euclidean")
# What the network predicts (dinosae.flow.prediction): the velocity at x_t, or the endpoint x1.
PREDICTIONS = ("velocity", "x1")
# How training draws times (dinosae.flow.times).
TIME_SAMPLERS = ("uniform", "logit-normal")
# The ODE solvers of sampling (dinosae.flow.solvers).
SOLVERS = ("euler", "heun", "midpoint")


def check_name(what: str, name: object, choices: tuple[str, ...]) -> str:
    """``name`` if it is one of ``choices``; otherwise a ``ValueError`` that names ``what`` and the choices.

    Example:
        >>> check_name("solver", "euler", SOLVERS)
        'euler'
        >>> check_name("manifold", "spere", MANIFOLDS)
        Traceback (most recent call last):
        ...
        ValueError: unknown manifold 'spere'; choose one of sphere, euclidean
    """
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")
    return name  # type: ignore[return-value]
