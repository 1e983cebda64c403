"""``make bench``: run every scenario, each in its own process, print the table and keep the JSON.

    python -m bench                 # everything
    python -m bench active nested   # some scenarios (names as in SCENARIOS below)
    python -m bench --quick         # fewer flows in the long scenarios (a smoke run, not for the README)

The JSON goes to ``bench/results/<UTC time>.json`` (git-ignored) with the machine and versions.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name -> (module, argument, timeout in seconds)
SCENARIOS: dict[str, tuple[str, str, int]] = {
    "active": ("bench.flows", "active", 120),
    "metrics": ("bench.flows", "metrics", 60),
    "kinds": ("bench.flows", "kinds", 180),
    "reference": ("bench.reference", "run", 180),
    "unregistered": ("bench.flows", "unregistered", 120),
    "nested": ("bench.flows", "nested", 120),
    "processor": ("bench.flows", "processor", 120),
    "delivery": ("bench.delivery", "run", 240),
    "memory": ("bench.memory", "run", 240),
}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "hud-otel": _version("hud-otel"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "hud-sdk": _version("hud-sdk"),
    }


def run_scenario(name: str, quick: bool) -> tuple[list[dict[str, Any]], str]:
    module, arg, timeout = SCENARIOS[name]
    env = dict(os.environ)
    env.pop("HUD_OTEL_RAISE_INTERNAL", None)
    if quick:
        env["HUD_OTEL_BENCH_QUICK"] = "1"
    cmd = [sys.executable, "-m", module, arg]
    try:
        proc = subprocess.run(
            cmd, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return [_failed(name, f"timed out after {timeout} s")], ""
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-ROWS "):
            return json.loads(line[len("BENCH-ROWS ") :]), proc.stderr
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return [_failed(name, f"exit {proc.returncode}: {' | '.join(tail)}")], proc.stderr


def _failed(name: str, why: str) -> dict[str, Any]:
    return {
        "scenario": name,
        "case": "did not run",
        "ours_ns": None,
        "baseline": "",
        "base_ns": None,
        "ratio": None,
        "target": "",
        "ok": False,
        "note": why,
    }


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}"
    return f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ["#", "case", "ours ns/op", "baseline", "base ns/op", "ratio", "target", "result"]
    lines = []
    for r in rows:
        ok = r.get("ok")
        result = "-" if ok is None else ("pass" if ok else "FAIL")
        if r.get("aim_ok") is not None and ok:
            result += " (aim met)" if r["aim_ok"] else " (aim missed)"
        lines.append(
            [
                str(r["scenario"]),
                str(r["case"]),
                _num(r.get("ours_ns")),
                str(r.get("baseline", "")),
                _num(r.get("base_ns")),
                _num(r.get("ratio"), 2) if r.get("ratio") is not None else "-",
                str(r.get("target", "")),
                result + (f"  {r['note']}" if r.get("note") else ""),
            ]
        )
    widths = [max(len(head[i]), *(len(line[i]) for line in lines)) for i in range(len(head) - 1)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, [*widths, 0])) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in [*widths, len(head[-1])]) + "|")
    for line in lines:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths)] + [line[-1]]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    info = machine()
    print(
        f"hud_otel bench: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"opentelemetry-sdk {info['opentelemetry-sdk']}, hud-otel {info['hud-otel']}, "
        f"hud-sdk {info['hud-sdk']}",
        flush=True,
    )
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for name in names:
        t0 = time.monotonic()
        got, _stderr = run_scenario(name, quick)
        rows.extend(got)
        print(f"  {name}: {time.monotonic() - t0:.1f} s", flush=True)
    elapsed = time.monotonic() - started
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; ratio = ours / baseline, medians of interleaved rounds")
    RESULTS.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}.json"
    out.write_text(
        json.dumps(
            {"time": stamp, "elapsed_s": elapsed, "quick": quick, "machine": info, "rows": rows},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"JSON: {out.relative_to(HERE.parent)}")
    # A missed target is a result, reported in the table; only a scenario that did not run fails.
    return 1 if any(r["case"] == "did not run" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
