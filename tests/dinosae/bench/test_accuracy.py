"""The accuracy table: this project's backends meet the contract where the anchors do not."""

import json
import math

from click.testing import CliRunner

from dinosae.bench import accuracy
from dinosae.cli import main


def _errors(rows, impl: str, op: str) -> dict[float, float]:
    return {r.angle: r.error for r in rows if r.impl == impl and r.op == op}


def test_backends_meet_the_contract_and_the_anchors_do_not() -> None:
    rows = accuracy.measure(pairs=32, dim=64)
    for impl in {r.impl for r in rows if r.impl.startswith("sphere_ops:")}:
        assert max(_errors(rows, impl, "dist").values()) <= 1e-6, impl
        assert max(_errors(rows, impl, "logmap").values()) <= 2e-6, impl
    # geoopt's float32 dist floors near zero; flow_matching's dist(x, x) is NaN; acos loses half the digits
    assert _errors(rows, "geoopt", "dist")[0.0] > 1e-3
    assert math.isnan(_errors(rows, "flow_matching", "dist")[0.0])
    assert _errors(rows, "eager (acos)", "dist")[1e-4] > 1e-2


def test_cli_prints_table_and_json() -> None:
    result = CliRunner().invoke(main, ["bench", "accuracy", "--pairs", "4", "--dim", "8", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert {r["op"] for r in payload["accuracy"]} == {"dist", "logmap"}
    assert "pi-1e-3" in result.output
