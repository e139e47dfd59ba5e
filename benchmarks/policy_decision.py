"""Per-decision latency: OPA sidecar (REST on localhost) vs embedded Rego (regopy).

    python benchmarks/policy_decision.py [--decisions 2000] [--warmup 200]

Starts its own OPA server on a free localhost port (needs the opa binary:
$INNOMINATUS_OPA_BIN or `opa` on PATH), then times sequential decisions over the
inputs in tests/fixtures/policy_decisions.yaml, cycling through them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ruamel.yaml import YAML  # noqa: E402

from innominatus.kit.policy import (  # noqa: E402
    EmbeddedRegoPolicyEngine,
    OpaSidecarPolicyEngine,
    PolicyEngine,
)
from tests.helpers.opa import OpaServer  # noqa: E402

POLICY_DIR = REPO_ROOT / "policies"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "policy_decisions.yaml"


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


async def measure(engine: PolicyEngine, inputs: list[dict], decisions: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        await engine.decide(inputs[i % len(inputs)])
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(decisions):
        t0 = time.perf_counter()
        await engine.decide(inputs[i % len(inputs)])
        samples.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    samples.sort()
    return {
        "p50": percentile(samples, 50) * 1e3,
        "p90": percentile(samples, 90) * 1e3,
        "p99": percentile(samples, 99) * 1e3,
        "mean": statistics.fmean(samples) * 1e3,
        "max": samples[-1] * 1e3,
        "per_sec": decisions / wall,
    }


async def run(decisions: int, warmup: int) -> None:
    inputs = [case["input"] for case in YAML(typ="safe").load(FIXTURES.read_text(encoding="utf-8"))["cases"]]
    results: dict[str, dict[str, float]] = {}

    with OpaServer(POLICY_DIR) as server:
        sidecar = OpaSidecarPolicyEngine(server.url)
        try:
            results[f"OPA sidecar ({server.url})"] = await measure(sidecar, inputs, decisions, warmup)
        finally:
            await sidecar.close()

    embedded = EmbeddedRegoPolicyEngine(POLICY_DIR)
    try:
        results["embedded Rego (regopy)"] = await measure(embedded, inputs, decisions, warmup)
    finally:
        await embedded.close()

    print(f"{decisions} sequential decisions per engine after {warmup} warm-up, {len(inputs)} distinct inputs")
    header = f"{'engine':<40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8} {'dec/s':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<40} {r['p50']:>8.3f} {r['p90']:>8.3f} {r['p99']:>8.3f} "
            f"{r['mean']:>8.3f} {r['max']:>8.3f} {r['per_sec']:>8.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.decisions, args.warmup))


if __name__ == "__main__":
    main()
