"""Score validation throughput and latency.

    python benchmarks/score_validation.py [--seconds 5] [--iterations 2000] [--no-grpc] [--profile]

1. In-process, one core: validations per second of the official sample
   ``../shared/reference/score-spec/samples/score-full.yaml`` through ``validate_score`` (parse
   with positions + schema + upgrade + semantic checks), one call after another.
2. Through gRPC: p50/p99 latency of ``SpecsService/ValidateWorkload``, one request at a time
   (latency, not load), over mTLS with a bearer token from the bootstrap admin. The platform
   runs embedded (``EmbeddedPlatform``, SQLite in a temporary directory) in this process.

``--profile`` prints the top of a cProfile run of the in-process loop.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from innominatus.specs.score import parsing  # noqa: E402
from innominatus.specs.validation import _fast_check, validate_score  # noqa: E402
from tests.helpers.shared import shared_dir  # noqa: E402

RPC_TIMEOUT = 30.0


def sample() -> tuple[Path, str]:
    path = shared_dir() / "reference" / "score-spec" / "samples" / "score-full.yaml"
    if not path.is_file():
        sys.exit(f"missing {path} (set INNOMINATUS_SHARED_DIR to the directory that holds reference/)")
    return path, path.read_text(encoding="utf-8")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def in_process(text: str, path: Path, seconds: float) -> dict:
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    except (AttributeError, OSError):
        pass
    validate_score(text, str(path))  # compile the validators
    latencies = []
    count = 0
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        validate_score(text, str(path))
        latencies.append(time.perf_counter() - now)
        count += 1
    elapsed = time.perf_counter() - started
    return {"validations_per_second": count / elapsed, "p50_us": percentile(latencies, 50) * 1e6,
            "p99_us": percentile(latencies, 99) * 1e6, "count": count}


def profile(text: str, path: Path, n: int = 2000) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        validate_score(text, str(path))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


async def through_grpc(text: str, iterations: int, warmup: int) -> dict:
    from innominatus.identity.v1 import identity_pb2, identity_pb2_grpc
    from innominatus.kit.clients import secure_channel
    from innominatus.kit.config import Settings
    from innominatus.kit.embedded import EmbeddedPlatform
    from innominatus.specs.v1 import specs_pb2, specs_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="innominatus-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", policy_dir=REPO_ROOT / "policies", log_level="WARNING",
                            gateway_rate_limit_per_second=0.0)
        platform = EmbeddedPlatform(settings)
        await platform.start()
        try:
            admin = json.loads((settings.data_dir / "bootstrap-admin.json").read_text(encoding="utf-8"))
            tls = platform.tls["cli"]
            identity_channel = secure_channel(f"127.0.0.1:{platform.hosts['identity'].port}", tls)
            specs_channel = secure_channel(f"127.0.0.1:{platform.hosts['specs'].port}", tls)
            try:
                login = await identity_pb2_grpc.IdentityServiceStub(identity_channel).Login(
                    identity_pb2.LoginRequest(username=admin["username"], password=admin["password"]),
                    timeout=RPC_TIMEOUT)
                auth = (("authorization", f"Bearer {login.access_token}"),)
                specs = specs_pb2_grpc.SpecsServiceStub(specs_channel)
                request = specs_pb2.ValidateWorkloadRequest(score_yaml=text)
                latencies = []
                for i in range(warmup + iterations):
                    started = time.perf_counter()
                    response = await specs.ValidateWorkload(request, metadata=auth, timeout=RPC_TIMEOUT)
                    if i >= warmup:
                        latencies.append(time.perf_counter() - started)
                assert response.workload == "example-workload-name123", response
            finally:
                await identity_channel.close()
                await specs_channel.close()
        finally:
            await platform.stop()
    return {"p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "mean_ms": statistics.fmean(latencies) * 1e3, "count": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the in-process loop")
    parser.add_argument("--iterations", type=int, default=2000, help="gRPC calls timed")
    parser.add_argument("--warmup", type=int, default=100, help="gRPC calls not timed")
    parser.add_argument("--no-grpc", action="store_true", help="only the in-process loop")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the in-process loop")
    args = parser.parse_args()
    path, text = sample()
    print(f"sample: score-full.yaml ({len(text)} bytes); YAML events from {parsing.BACKEND}; "
          f"fast schema check: {'fastjsonschema' if _fast_check() else 'none (jsonschema only)'}")
    result = validate_score(text, str(path))
    print(f"findings on the sample: {[f.code for f in result.findings]}")
    local = in_process(text, path, args.seconds)
    print(f"in-process, one core: {local['validations_per_second']:,.0f} validations/s "
          f"(p50 {local['p50_us']:.0f} us, p99 {local['p99_us']:.0f} us, {local['count']} calls)")
    if args.profile:
        profile(text, path)
    if not args.no_grpc:
        remote = asyncio.run(through_grpc(text, args.iterations, args.warmup))
        print(f"gRPC SpecsService/ValidateWorkload (mTLS, one at a time): p50 {remote['p50_ms']:.2f} ms, "
              f"p99 {remote['p99_ms']:.2f} ms, mean {remote['mean_ms']:.2f} ms ({remote['count']} calls)")


if __name__ == "__main__":
    main()
