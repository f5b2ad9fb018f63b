"""The kernel benchmark: every implementation runs, the table and JSON agree, bad options fail."""

import json
import math

import torch
from click.testing import CliRunner

from dinosae.bench import kernels, timing
from dinosae.bench.sphere_impls import EAGER, OPS, implementations, make_inputs
from dinosae.cli import main


def test_every_alternative_computes_the_same_geometry() -> None:
    """The eager formulas, geoopt and flow_matching agree with sphere_ops on generic inputs."""
    device = torch.device("cpu")
    for op in OPS:
        inputs = make_inputs(op, 16, 12, torch.float32, device)
        impls = implementations(op, device)
        expected = impls["sphere_ops:torch"](*inputs.values())
        for name, impl in impls.items():
            if name == "compile" or (op == "transp" and name == "geoopt"):
                continue  # compile is the eager formula; geoopt's transp is a projection, not transport
            got = impl(*inputs.values())
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=2e-4, atol=2e-4, msg=f"{name} {op}")
    assert set(EAGER) == set(OPS)


def test_cli_prints_the_table_and_one_json_object() -> None:
    result = CliRunner().invoke(
        main, ["bench", "kernels", "--op", "geodesic_velocity", "--rows", "64", "--dim", "24", "--repeats", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    rows = payload["results"]
    impls = {r["impl"] for r in rows}
    assert {"sphere_ops:auto", "sphere_ops:cpp", "eager", "compile", "geoopt", "flow_matching"} <= impls
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    for r in rows:
        assert not r["error"], r
        assert r["median_ms"] > 0 and r["gbps"] > 0
        assert math.isclose(r["vs_eager"], 1.0) if r["impl"] == "eager" else r["vs_eager"] > 0
    assert "sphere_ops:auto" in result.output and "x compile" in result.output


def test_cli_rejects_unknown_options_with_a_reason() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "kernels", "--op", "slerp"])
    assert result.exit_code != 0 and "unknown op slerp" in result.output
    result = runner.invoke(main, ["bench", "kernels", "--dtype", "int8"])
    assert result.exit_code != 0 and "unknown dtype int8" in result.output
    result = runner.invoke(main, ["bench", "kernels", "--rows", "many"])
    assert result.exit_code != 0 and "comma-separated" in result.output


def test_timing_measures_and_rotates_only_on_cuda() -> None:
    calls = []
    t = timing.measure(lambda i: calls.append(i), torch.device("cpu"), repeats=4, warmup=1)
    assert calls == [0, 1, 2, 3, 4] and t.median >= 0 and t.repeats == 4
    assert timing.rotations(1 << 20, torch.device("cpu")) == 1
    assert timing.rotations(1 << 20, torch.device("cuda")) == 16
    assert timing.rotations(1 << 30, torch.device("cuda")) == 1


def test_to_json_records_the_configuration() -> None:
    config = kernels.Config(ops=("dist",), rows=(8,), dims=(4,), modes=("fwd",), impls=("eager",), repeats=1)
    results = kernels.run(config)
    payload = kernels.to_json(results, config)
    assert payload["config"]["ops"] == ["dist"] and payload["environment"]["device"] == "cpu"
    assert [r["impl"] for r in payload["results"]] == ["eager"]
