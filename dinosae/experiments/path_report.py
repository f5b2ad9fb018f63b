"""The results of ``dinosae ablate path`` as text: a summary for the terminal and a Markdown table."""

from __future__ import annotations

# A result's keys that are not problems.
_NOT_PROBLEMS = ("settings",)


def _reached(steps: float | None) -> str:
    return "never" if steps is None else f"{steps:.0f}"


def format_summary(result: dict) -> str:
    """A few lines per problem: each run's final distance and steps to the target, the few-step search,
    and the speed-ups of the sphere over R^D.

    Example:
        >>> cell = {"nfe": 8, "distance": 0.02}
        >>> run = {"final": 0.05, "seconds": 1.0, "steps_to_target": 30.0, "solvers": {"euler": {"8": cell}}}
        >>> fast = {"met": True, "reference": 0.02, "best": {"solver": "heun", **cell}, "closest": None}
        >>> up = {"target": 0.04, "sphere_steps": 30.0, "euclidean_steps": None, "speedup": None}
        >>> print(format_summary({"settings": {}, "vmf": {"floor": 0.01, "target": 0.02,
        ...       "runs": {"sphere/velocity": dict(run, few_step=fast), "euclidean/velocity": run},
        ...       "speedup": {"velocity": {"at_target": up, "at_worse_final": dict(up, speedup=2.0)}}}}))
        vmf: floor 0.0100, target 0.0200
          sphere/velocity     final 0.0500  target at step 30  (1 s)  euler: 8:0.0200
            few steps: heun at 8 NFE 0.0200 (Euler-250 0.0200): met
          euclidean/velocity  final 0.0500  target at step 30  (1 s)  euler: 8:0.0200
          velocity speed-up at the target (0.0400): not reached; at the worse final (0.0400): 2.00x
    """
    lines = []
    for name, problem in result.items():
        if name in _NOT_PROBLEMS:
            continue
        lines.append(f"{name}: floor {problem['floor']:.4f}, target {problem['target']:.4f}")
        for run_key, run in problem["runs"].items():
            grids = "  ".join(f"{method}: " + " ".join(f"{budget}:{cell['distance']:.4f}"
                                                       for budget, cell in cells.items())
                              for method, cells in run["solvers"].items())
            lines.append(f"  {run_key:<19} final {run['final']:.4f}  target at step {_reached(run['steps_to_target'])}"
                         f"  ({run['seconds']:.0f} s)  {grids}")
            if "few_step" in run:
                lines.append(f"    few steps: {_few_step_line(run['few_step'])}")
        for prediction, entries in problem["speedup"].items():
            shown = [f"{words} ({entry['target']:.4f}): "
                     + ("not reached" if entry["speedup"] is None else f"{entry['speedup']:.2f}x")
                     for words, entry in (("at the target", entries["at_target"]),
                                          ("at the worse final", entries["at_worse_final"]))]
            lines.append(f"  {prediction} speed-up {'; '.join(shown)}")
    return "\n".join(lines)


def _few_step_line(search: dict) -> str:
    cell = search["best"] if search["met"] else search["closest"]
    verdict = "met" if search["met"] else "not met (closest shown)"
    return (f"{cell['solver']} at {cell['nfe']} NFE {cell['distance']:.4f} (Euler-250 {search['reference']:.4f}): "
            f"{verdict}")


def format_table(result: dict, problem: str = "vmf") -> str:
    """A Markdown table of one problem's grid: a row per run and solver, a column per NFE budget, and the
    training steps to the target.

    Example:
        >>> cell = {"nfe": 4, "distance": 0.0123}
        >>> run = {"steps_to_target": None, "solvers": {"euler": {"4": cell}}}
        >>> print(format_table({"vmf": {"runs": {"sphere/x1": run}}}))
        | manifold | prediction | solver | NFE 4 | steps to target |
        |---|---|---|---|---|
        | sphere | x1 | euler | 0.0123 | never |
    """
    runs = result[problem]["runs"]
    budgets = list(next(iter(next(iter(runs.values()))["solvers"].values())))
    lines = ["| manifold | prediction | solver | " + " | ".join(f"NFE {b}" for b in budgets) + " | steps to target |",
             "|" + "---|" * (len(budgets) + 4)]
    for run_key, run in runs.items():
        manifold, prediction = run_key.split("/")
        for method, cells in run["solvers"].items():
            distances = " | ".join(f"{cells[b]['distance']:.4f}" for b in budgets)
            lines.append(f"| {manifold} | {prediction} | {method} | {distances} | {_reached(run['steps_to_target'])} |")
    return "\n".join(lines)
