#!/usr/bin/env python3
"""Helpers for bench/run.sh (Python 3.11, standard library only).

Subcommands:
  gen-data WORK [--quick]   make the test files under WORK/www and WORK/data.json
  rss-sample PID OUT        sample VmRSS of PID every 100 ms until SIGTERM; write the max (KiB)
  job-id                    read `mdlctl --json add` output on stdin, print the job id
  verify DEST SHAFILE       check DEST holds exactly the files of SHAFILE ("HEX  NAME" lines)
  manifest URLS DEST OUT    write an `mdlctl ensure` manifest (JSON) for URLS ("URL SHA" lines)
  report WORK               read WORK/raw.tsv, print the table, write results.md / results.json
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB

# The repository: REPO_FILES files, sizes in [REPO_MIN, REPO_MAX] from a seeded RNG, log-scale
# and skewed towards small files (exponent u**REPO_SKEW), ~250 MiB in all: like a model repo
# with many small config/tokenizer files and a few multi-MiB shards.
REPO_FILES = 300
REPO_MIN = 4 * 1024
REPO_MAX = 8 * MIB
REPO_SEED = 20240601
REPO_SKEW = 1.5
# Bump when the layout or content of the generated data changes, so old data is rebuilt.
DATA_VERSION = 1

BIG_FILES = {"big-1g.bin": GIB, "big-256m.bin": 256 * MIB}


def repo_sizes() -> list[int]:
    rng = random.Random(REPO_SEED)
    lo, hi = math.log(REPO_MIN), math.log(REPO_MAX)
    sizes = [int(math.exp(lo + (hi - lo) * rng.random() ** REPO_SKEW)) for _ in range(REPO_FILES)]
    # Keep the ends of the range in the set so both extremes are exercised.
    sizes[0], sizes[1] = REPO_MIN, REPO_MAX
    return sizes


def write_random(path: Path, size: int) -> str:
    """Write `size` pseudo-random bytes to `path` and return their sha256.

    The bytes come from a seeded generator expanded with SHAKE-256 per 1 MiB block, which is
    incompressible and fast enough (several hundred MB/s) without reading /dev/urandom."""
    h = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    block_seed = hashlib.sha256(path.name.encode()).digest()
    with open(tmp, "wb") as f:
        done = 0
        n = 0
        while done < size:
            chunk = min(4 * MIB, size - done)
            data = hashlib.shake_256(block_seed + n.to_bytes(8, "little")).digest(chunk)
            f.write(data)
            h.update(data)
            done += chunk
            n += 1
    os.replace(tmp, path)
    return h.hexdigest()


def gen_data(work: Path, quick: bool) -> None:
    www = work / "www"
    repo = www / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    manifest_path = work / "data.json"
    manifest: dict = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    if manifest.get("version") != DATA_VERSION:
        manifest = {"version": DATA_VERSION, "big": {}, "repo": []}

    def have(rel: str, size: int, sha: str | None) -> bool:
        p = www / rel
        return sha is not None and p.is_file() and p.stat().st_size == size

    wanted_big = ["big-1g.bin"] + (["big-256m.bin"] if quick else [])
    for name in wanted_big:
        size = BIG_FILES[name]
        entry = manifest["big"].get(name)
        if entry and have(name, size, entry.get("sha256")):
            continue
        t0 = time.monotonic()
        print(f"  generating www/{name} ({size // MIB} MiB)...", flush=True)
        sha = write_random(www / name, size)
        manifest["big"][name] = {"path": name, "size": size, "sha256": sha}
        print(f"    done in {time.monotonic() - t0:.1f} s", flush=True)
        manifest_path.write_text(json.dumps(manifest, indent=1))

    sizes = repo_sizes()
    entries = manifest.get("repo") or []
    ok = len(entries) == len(sizes) and all(
        e["size"] == s and have(e["path"], s, e.get("sha256")) for e, s in zip(entries, sizes)
    )
    if not ok:
        t0 = time.monotonic()
        total = sum(sizes)
        print(
            f"  generating www/repo: {len(sizes)} files, {total / MIB:.0f} MiB total...",
            flush=True,
        )
        entries = []
        for i, size in enumerate(sizes):
            rel = f"repo/shard-{i:03d}.bin"
            entries.append({"path": rel, "size": size, "sha256": write_random(www / rel, size)})
        manifest["repo"] = entries
        manifest_path.write_text(json.dumps(manifest, indent=1))
        print(f"    done in {time.monotonic() - t0:.1f} s", flush=True)

    # Plain-text lists for the shell: "PATH SIZE SHA256" per line.
    for name, entry in manifest["big"].items():
        (work / f"{name}.list").write_text(f"{entry['path']} {entry['size']} {entry['sha256']}\n")
    (work / "repo.list").write_text(
        "".join(f"{e['path']} {e['size']} {e['sha256']}\n" for e in manifest["repo"])
    )


def rss_sample(pid: int, out: Path) -> None:
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    status = Path(f"/proc/{pid}/status")
    peak = 0
    samples = 0
    while True:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]))
                    samples += 1
                    break
        except OSError:
            break  # the process is gone
        if stop:
            break
        time.sleep(0.1)
    out.write_text(f"{peak} {samples}\n")


def job_id() -> None:
    text = sys.stdin.read()
    try:
        job = json.loads(text)
    except ValueError:
        sys.exit(f"mdlctl add --json printed no JSON: {text[:200]!r}")
    outcome = job.get("outcome")
    if outcome not in (None, "created", "Created"):
        print(f"warning: mdlctl add outcome is {outcome!r}, not 'created'", file=sys.stderr)
    print(job["id"])


def verify(dest: Path, shafile: Path) -> None:
    """Exit non-zero unless `dest` holds exactly the listed files with the listed sha256
    (hashlib uses OpenSSL's SHA-NI code: several times faster than coreutils sha256sum)."""
    want = {}
    for line in shafile.read_text().splitlines():
        if line.strip():
            sha, name = line.split(None, 1)
            want[name.strip()] = sha
    have = sorted(p.name for p in dest.iterdir())
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    if extra or missing:
        sys.exit(f"{dest}: missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    bad = []
    for name, sha in want.items():
        h = hashlib.sha256()
        with open(dest / name, "rb") as f:
            while chunk := f.read(4 * MIB):
                h.update(chunk)
        if h.hexdigest() != sha:
            bad.append(name)
    if bad:
        sys.exit(f"{dest}: {len(bad)} file(s) with a wrong sha256: {bad[:5]}")


def manifest(urls: Path, dest: Path, out: Path) -> None:
    files = []
    for line in urls.read_text().splitlines():
        if line.strip():
            url, sha = line.split()
            files.append({"url": url, "sha256": sha})
    doc = {"models": [{"name": "bench-repo", "dir": str(dest.resolve()), "files": files}]}
    out.write_text(json.dumps(doc, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Report

SCENARIO_TITLES = {
    "unthrottled": "1 GiB, unthrottled (:18080)",
    "capped": "1 GiB, 25 MiB/s per connection (:18081)",
    "capped-256m": "256 MiB, 25 MiB/s per connection (:18081)",
    "repo": "repository, 300 files (:18080)",
}
TOOL_ORDER = ["mdl", "mdl-add", "curl", "curl+sha256sum", "aria2c"]


def tool_label(scenario: str, tool: str) -> str:
    if tool == "mdl":
        return "mdl ensure manifest (sha256)" if scenario == "repo" else "mdl (sha256)"
    if tool == "mdl-add":
        return "mdl 300 x add + wait (sha256)"
    if tool == "curl":
        return "curl -Z --parallel-max 8" if scenario == "repo" else "curl"
    if tool == "curl+sha256sum":
        return "curl + sha256sum"
    if tool == "aria2c":
        return "aria2c -i -j8 -x1" if scenario == "repo" else "aria2c -x16 -s16"
    return tool


def load_runs(work: Path) -> list[dict]:
    runs = []
    raw = work / "raw.tsv"
    if not raw.exists():
        return runs
    for line in raw.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        scenario, tool, run, t0, t1, nbytes, user, sys_, rss_kb = fields[:9]
        queue_s = float(fields[9]) if len(fields) > 9 else 0.0
        wall = float(t1) - float(t0)
        runs.append(
            {
                "scenario": scenario,
                "tool": tool,
                "run": int(run),
                "wall_s": wall,
                "bytes": int(nbytes),
                "cpu_s": float(user) + float(sys_),
                "user_s": float(user),
                "sys_s": float(sys_),
                "rss_kib": int(rss_kb),
                "mdl_queue_s": queue_s,
            }
        )
    return runs


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["tool"]), []).append(r)
    rows = []
    for (scenario, tool), rs in groups.items():
        walls = [r["wall_s"] for r in rs]
        wall = statistics.median(walls)
        nbytes = rs[0]["bytes"]
        cpus = [r["cpu_s"] for r in rs]
        cpu = statistics.median(cpus)
        gib = nbytes / GIB if nbytes else 0.0
        rows.append(
            {
                "scenario": scenario,
                "tool": tool,
                "label": tool_label(scenario, tool),
                "runs": len(rs),
                "bytes": nbytes,
                "wall_s": wall,
                "wall_min_s": min(walls),
                "wall_max_s": max(walls),
                # (max - min) / median: how noisy this row's runs were.
                "wall_spread": (max(walls) - min(walls)) / wall if wall > 0 else 0.0,
                "wall_all_s": [round(r["wall_s"], 3) for r in sorted(rs, key=lambda r: r["run"])],
                "mib_s": nbytes / MIB / wall if wall > 0 else 0.0,
                "cpu_s": cpu,
                "cpu_min_s": min(cpus),
                "cpu_max_s": max(cpus),
                "cpu_s_per_gib": cpu / gib if gib else 0.0,
                "cpu_per_gib_min": min(cpus) / gib if gib else 0.0,
                "cpu_per_gib_max": max(cpus) / gib if gib else 0.0,
                "peak_rss_mib": max(r["rss_kib"] for r in rs) / 1024,
                "rss_median_mib": statistics.median(r["rss_kib"] for r in rs) / 1024,
                "mdl_queue_s": statistics.median(r["mdl_queue_s"] for r in rs),
            }
        )
    order = list(SCENARIO_TITLES)
    rows.sort(
        key=lambda r: (
            order.index(r["scenario"]) if r["scenario"] in order else 99,
            TOOL_ORDER.index(r["tool"]) if r["tool"] in TOOL_ORDER else 99,
        )
    )
    # Ratio: mdl speed / this tool's speed, within a scenario.
    for r in rows:
        mdl = next((m for m in rows if m["scenario"] == r["scenario"] and m["tool"] == "mdl"), None)
        r["mdl_ratio"] = (mdl["mib_s"] / r["mib_s"]) if (mdl and r["tool"] != "mdl" and r["mib_s"]) else None
    return rows


def store_targets(work: Path) -> list[dict]:
    """The 100k-job targets, as bench/store.sh reported them (see run.sh)."""
    names = [
        "store: daemon RSS with 100k jobs <= 64 MiB",
        "store: `ls` of 100k jobs <= 0.5 s",
        "store: `status ID` <= 5 ms",
        "store: 10k jobs queued durably (one add) <= 2 s",
    ]
    status_path = work / "store.status"
    status = status_path.read_text().strip() if status_path.exists() else "not run (BENCH_SCENARIOS)"
    if status == "ok":
        js = work / "store.json"
        if js.exists():
            try:
                got = json.loads(js.read_text()).get("targets", [])
                out = [
                    {"target": f"store: {t['target']}", "met": t.get("met"), "detail": str(t.get("detail", ""))}
                    for t in got
                ]
                if out:
                    return out
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                status = f"store.json unreadable: {e}"
        md = work / "store.md"
        lines = md.read_text().splitlines() if md.exists() else []
        out = []
        for line in lines:
            text = line.strip().lstrip("-*| ").strip()
            upper = text.upper()
            if "NOT MET" in upper:
                out.append({"target": f"store: {text}", "met": False, "detail": "(bench/store.sh)"})
            elif "MET" in upper.split() or "**MET**" in upper or "[MET" in upper:
                out.append({"target": f"store: {text}", "met": True, "detail": "(bench/store.sh)"})
        if out:
            return out
        status = "bench/store.sh printed no MET / NOT MET line (see bench/work/store.md)"
    return [{"target": n, "met": None, "detail": status} for n in names]


def targets(rows: list[dict], meta: dict, work: Path | None = None) -> list[dict]:
    """Every target of issue 14, in the issue's order, met or not with its numbers."""

    def get(scenario: str, tool: str) -> dict | None:
        return next((r for r in rows if r["scenario"] == scenario and r["tool"] == tool), None)

    out = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"target": name, "met": ok, "detail": detail})

    def speed(m: dict, p: dict) -> str:
        return (
            f"mdl {m['wall_s']:.2f} s ({m['wall_min_s']:.2f}-{m['wall_max_s']:.2f}), "
            f"{m['mib_s']:.0f} MiB/s; peer {p['wall_s']:.2f} s ({p['wall_min_s']:.2f}-{p['wall_max_s']:.2f}), "
            f"{p['mib_s']:.0f} MiB/s"
        )

    def ratio_target(name: str, scenario: str, peer: str, factor: float) -> None:
        m, p = get(scenario, "mdl"), get(scenario, peer)
        if not (m and p):
            add(name, None, "not measured")
            return
        ratio = m["mib_s"] / p["mib_s"] if p["mib_s"] else 0.0
        add(name, ratio >= factor, f"x{ratio:.2f} (want >= {factor:.1f}): {speed(m, p)}")

    ratio_target("1 GiB unthrottled: mdl (sha256 verified) >= 1.0 x curl (no hash)", "unthrottled", "curl", 1.0)
    m, c = get("unthrottled", "mdl"), get("unthrottled", "curl")
    name = "1 GiB unthrottled: mdl CPU s/GiB <= curl's + 1.1 s"
    if m and c:
        add(
            name,
            m["cpu_s_per_gib"] <= c["cpu_s_per_gib"] + 1.1,
            f"mdl {m['cpu_s_per_gib']:.2f} ({m['cpu_per_gib_min']:.2f}-{m['cpu_per_gib_max']:.2f}) vs "
            f"curl {c['cpu_s_per_gib']:.2f} ({c['cpu_per_gib_min']:.2f}-{c['cpu_per_gib_max']:.2f}) + 1.1 = "
            f"{c['cpu_s_per_gib'] + 1.1:.2f} CPU s/GiB",
        )
    else:
        add(name, None, "not measured")
    ratio_target("300 files: mdl >= 1.0 x curl -Z --parallel-max 8", "repo", "curl", 1.0)
    ratio_target("300 files: mdl >= 1.5 x aria2c -i -j8", "repo", "aria2c", 1.5)
    capped = "capped-256m" if get("capped-256m", "mdl") or get("capped-256m", "aria2c") else "capped"
    ratio_target(f"{capped}: 25 MiB/s per connection: mdl >= 1.3 x aria2c -x16 -s16", capped, "aria2c", 1.3)

    idle = meta.get("mdld_idle_rss_mib")
    if "mdl" in meta.get("tools", ["mdl"]) and idle:
        add("daemon memory idle <= 10 MiB", idle <= 10, f"{idle:.1f} MiB VmRSS before the first download")
    else:
        add("daemon memory idle <= 10 MiB", None, "not measured")
    m = get("unthrottled", "mdl") or get("capped", "mdl")
    if m:
        add(
            "daemon memory <= 64 MiB during the 1 GiB download",
            m["peak_rss_mib"] <= 64,
            f"peak {m['peak_rss_mib']:.1f} MiB (median of the runs' peaks {m['rss_median_mib']:.1f}; "
            f"VmHWM reset before each run, VmRSS sampled every 100 ms) in '{m['scenario']}'",
        )
    else:
        add("daemon memory <= 64 MiB during the 1 GiB download", None, "not measured")
    if work is not None:
        out += store_targets(work)
    return out


def noise(rows: list[dict]) -> list[str]:
    """How noisy the runs were: the spread (max - min) / median of every row with >1 run."""
    multi = [r for r in rows if r["runs"] > 1]
    if not multi:
        return ["Noise: one run per row (BENCH_QUICK or BENCH_RUNS=1): no spread to report; ratios of one run are rough."]
    worst = max(multi, key=lambda r: r["wall_spread"])
    spreads = sorted(r["wall_spread"] for r in multi)
    med = statistics.median(spreads)
    verdict = "quiet" if worst["wall_spread"] <= 0.10 else "noisy" if worst["wall_spread"] <= 0.25 else "VERY noisy"
    return [
        f"Noise: wall time spread (max-min)/median per row: median {med * 100:.0f}%, worst {worst['wall_spread'] * 100:.0f}% "
        f"({worst['scenario']} / {worst['label']}): {verdict}.",
    ]


def fmt_table(headers: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


def report(work: Path) -> None:
    meta_path = work / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    runs = load_runs(work)
    rows = summarize(runs)
    tgts = targets(rows, meta, work)

    headers = [
        "scenario",
        "tool",
        "runs",
        "median wall s (min-max)",
        "MiB/s",
        "CPU s (min-max)",
        "CPU s/GiB",
        "peak RSS MiB",
        "mdl speed / tool",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r["scenario"],
                r["label"],
                str(r["runs"]),
                f"{r['wall_s']:.2f} ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})",
                f"{r['mib_s']:.1f}",
                f"{r['cpu_s']:.2f} ({r['cpu_min_s']:.2f}-{r['cpu_max_s']:.2f})",
                f"{r['cpu_s_per_gib']:.2f}",
                f"{r['peak_rss_mib']:.1f}",
                "-" if r["mdl_ratio"] is None else f"{r['mdl_ratio']:.2f}x",
            ]
        )

    def tgt_lines(markdown: bool) -> list[str]:
        lines = []
        for t in tgts:
            mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            lines.append(f"- **{mark}** {t['target']}: {t['detail']}" if markdown else f"  [{mark:7}] {t['target']}: {t['detail']}")
        return lines

    warnings = meta.get("quiet_warnings") or []
    notes = [
        f"Machine: {meta.get('machine', '?')}",
        f"Versions: {meta.get('versions', '?')}",
        *noise(rows),
        "Quiet check (no other mdld, no cargo/rustc, CPUs busy over 1 s before each case): "
        + ("OK" if not warnings else "NOT QUIET: " + " | ".join(dict.fromkeys(warnings))),
        f"The whole script took {meta.get('elapsed_s', 0) / 60:.1f} min.",
        "Median of the runs for wall time and CPU (min-max in brackets); peak RSS is the max over the runs. "
        "Runs are interleaved: run 1 of every tool, then run 2, ...",
        "MiB/s = bytes / median wall. CPU s = user+sys (mdl: daemon delta from /proc/PID/stat plus the mdlctl client processes; "
        "curl/aria2c: GNU time).",
        "mdl peak RSS = mdld's VmHWM after resetting it before the run (/proc/PID/clear_refs), or the max VmRSS sampled "
        "every 100 ms if larger; curl/aria2c: GNU time %M.",
    ]
    repo_add = next((r for r in rows if r["scenario"] == "repo" and r["tool"] == "mdl-add"), None)
    if repo_add:
        notes.append(
            "repository: 'mdl ensure manifest' is one `mdlctl ensure --wait MANIFEST` (one process, "
            "one connection for all 300 files); 'mdl 300 x add + wait' is one `mdlctl add` process "
            f"per file, then `mdlctl wait`: queueing took {repo_add['mdl_queue_s']:.2f} s of its "
            f"{repo_add['wall_s']:.2f} s (median). The targets use the ensure row."
        )
    if any(r["scenario"].startswith("capped") and r["tool"] == "curl" for r in rows):
        notes.append(
            "capped: curl (one connection, ~41 s for 1 GiB) runs BENCH_CAPPED_CURL_RUNS times (default 1); it is no target's peer."
        )
    if "mdl" in meta.get("tools", ["mdl"]):
        notes += [
            f"mdld idle RSS before the first download: {meta.get('mdld_idle_rss_mib', 0):.1f} MiB. "
            "mdld runs with max_concurrent = 8 (all scenarios; it matters only for the repository).",
            "mdl verifies the sha256 of every file and fsyncs it before reporting it done; "
            "curl and aria2c do neither (see the curl + sha256sum row for a hashed baseline).",
        ]
    store_md = work / "store.md"
    store_text = store_md.read_text().rstrip() if store_md.exists() and store_md.stat().st_size else ""
    met = sum(1 for t in tgts if t["met"] is True)
    failed = sum(1 for t in tgts if t["met"] is False)
    text = [
        "",
        "=== mdl benchmark results ===",
        "",
        fmt_table(headers, body, markdown=False),
        "",
        *(["Store (bench/store.sh):", store_text, ""] if store_text else []),
        f"Targets (issue 14): {met} met, {failed} not met, {len(tgts) - met - failed} n/a",
        *tgt_lines(False),
        "",
        *("  " + n for n in notes),
        "",
    ]
    print("\n".join(text))

    md = [
        "# mdl benchmark results",
        "",
        f"Generated {meta.get('date', '')} by `bench/run.sh`{' (BENCH_QUICK=1)' if meta.get('quick') else ''}.",
        "",
        fmt_table(headers, body, markdown=True),
        "",
        *(["## Store (bench/store.sh)", "", store_text, ""] if store_text else []),
        f"## Targets ({met} met, {failed} not met, {len(tgts) - met - failed} n/a)",
        "",
        *tgt_lines(True),
        "",
        "## Notes",
        "",
        *("- " + n for n in notes),
        "",
    ]
    (work / "results.md").write_text("\n".join(md))
    (work / "results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "targets": tgts, "runs": runs}, indent=2) + "\n"
    )
    print(f"Wrote {work / 'results.md'} and {work / 'results.json'}")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "gen-data":
        gen_data(Path(argv[2]), "--quick" in argv[3:])
    elif cmd == "rss-sample":
        rss_sample(int(argv[2]), Path(argv[3]))
    elif cmd == "job-id":
        job_id()
    elif cmd == "verify":
        verify(Path(argv[2]), Path(argv[3]))
    elif cmd == "manifest":
        manifest(Path(argv[2]), Path(argv[3]), Path(argv[4]))
    elif cmd == "report":
        report(Path(argv[2]))
    else:
        sys.exit(f"unknown subcommand {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
