"""Hostile specs: wall time and peak memory of loading an alias bomb, and the fuzz corpus's throughput.

    .venv/bin/python bench/bench_spec_hostile.py [--levels 6,9,12] [--fanout 9] [--cases 1200]

Each bomb ("billion laughs": level i is a list of ``fanout`` aliases of level i-1) is loaded in a fresh
child process, which reports the file size, the outcome, the load's wall time and its peak RSS
(``resource.getrusage``); the child's RSS right after importing agentvm.spec is printed as the floor.
Then the seeded fuzz corpus of ``tests/unit/test_spec_fuzz.py`` is loaded in this process: cases, how
many loaded / were refused / raised anything else (must be 0), and the slowest case.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import resource, sys, time
from agentvm.spec import SpecError, load_spec
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_spec(sys.argv[1], env={})
    outcome = "loaded"
except SpecError as e:
    outcome = "refused: " + str(e).split(": ", 1)[1][:70]
seconds = time.perf_counter() - start
print(f"{seconds:.3f} {floor // 1024} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} {outcome}")
"""


def bomb(levels: int, fanout: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nsolution: *a{levels}\n"


def bombs(levels: list[int], fanout: int) -> None:
    print(f"{'levels':>6} {'bytes':>6} {'seconds':>8} {'floor MB':>8} {'peak MB':>8}  outcome")
    with tempfile.TemporaryDirectory() as tmp:
        for n in levels:
            spec = Path(tmp) / f"bomb{n}.yaml"
            spec.write_text(bomb(n, fanout))
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(spec)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            seconds, floor, peak, outcome = done.stdout.strip().split(" ", 3)
            size = spec.stat().st_size
            print(f"{n:>6} {size:>6} {seconds:>8} {floor:>8} {peak:>8}  {outcome}")


def fuzz(cases: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.unit import test_spec_fuzz as corpus

    from agentvm.spec import SpecError, load_spec_text

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pw.txt").write_text("pw\n")
        (root / "pw.bin").write_bytes(b"\xff\xfe")
        (root / "empty").write_text("")
        (root / "cert.pem").write_text("x")
        files = {"CERT": str(root / "cert.pem"), "SHA": "ab" * 32, "root": str(root)}
        counts = {"loaded": 0, "refused": 0, "other exception": 0}
        slowest = (0.0, -1)
        start = time.perf_counter()
        for seed in range(cases):
            text, env = corpus.case(seed, files)
            t = time.perf_counter()
            try:
                load_spec_text(text, "fuzz.yaml", env=env, base_dir=root)
                counts["loaded"] += 1
            except SpecError:
                counts["refused"] += 1
            except Exception:
                counts["other exception"] += 1
            slowest = max(slowest, (time.perf_counter() - t, seed))
        total = time.perf_counter() - start
    print(f"\nfuzz: {cases} cases in {total:.2f} s: {counts}; slowest case {slowest[1]}: {slowest[0]:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="6,9,12")
    parser.add_argument("--fanout", type=int, default=9)
    parser.add_argument("--cases", type=int, default=1200)
    args = parser.parse_args()
    bombs([int(n) for n in args.levels.split(",")], args.fanout)
    fuzz(args.cases)


if __name__ == "__main__":
    main()
