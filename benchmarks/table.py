"""The report: the one table of ratios against plain Celery, the machine line and the
details behind the table."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from typing import Any

import redis

from benchmarks.harness import Config


def machine_info(client: redis.Redis) -> dict[str, Any]:
    import celery
    import kombu

    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = client.info("server")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": str(server.get("redis_version"))
        + (f" (valkey {server['valkey_version']})" if "valkey_version" in server else ""),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis.__version__,
    }


def fmt(value: float, digits: int = 2) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def build_table(cfg: Config, r: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def row(
        metric: str, ours: str, base: str, ratio: float | None, target: str, met: bool | None
    ) -> None:
        rows.append(
            [
                metric,
                ours,
                base,
                "" if ratio is None else f"{ratio:.2f}x",
                target,
                "" if met is None else ("yes" if met else "NO"),
            ]
        )

    if "throughput" in r:
        t = r["throughput"]
        ratio = t["actor_rate"] / t["plain_rate"]
        row(
            f"throughput, msg/s ({t['actors']} actors x {t['messages'] // t['actors']})",
            fmt(t["actor_rate"]),
            fmt(t["plain_rate"]) + " (plain tasks)",
            ratio,
            ">= 3x",
            ratio >= 3,
        )
    if "latency" in r:
        lat = r["latency"]
        s, w, base, ap = lat["send"], lat["wake"], lat["set"], lat["apply_async"]
        for label, series in (("actor already scheduled", s), ("wakes idle actor: + publish", w)):
            for pct in ("p50", "p99"):
                ratio = series[pct] / base[pct]
                row(
                    f"send {pct}, ms ({label})",
                    fmt(series[pct], 3),
                    fmt(base[pct], 3) + " (redis SET)",
                    ratio,
                    "<= 3x" if pct == "p50" else "-",
                    ratio <= 3 if pct == "p50" else None,
                )
        row(
            "  for reference: apply_async p50 / p99, ms",
            "",
            f"{fmt(ap['p50'], 3)} / {fmt(ap['p99'], 3)}",
            None,
            "-",
            None,
        )
    if "tick" in r:
        tk = r["tick"]
        big, small = tk["big"], tk["small"]
        ratio = big["due"]["mean_ms"] / small["due"]["mean_ms"]
        row(
            f"tick, ms mean ({cfg.due_actors} due; {big['idle']:,} vs {small['idle']:,} idle)",
            fmt(big["due"]["mean_ms"]),
            fmt(small["due"]["mean_ms"]) + f" ({small['idle']:,} idle)",
            ratio,
            "<= 2",
            ratio <= 2,
        )
        row(
            f"tick, ms mean (nothing due; {big['idle']:,} vs {small['idle']:,} idle)",
            fmt(big["empty"]["mean_ms"]),
            fmt(small["empty"]["mean_ms"]) + f" ({small['idle']:,} idle)",
            big["empty"]["mean_ms"] / small["empty"]["mean_ms"],
            "-",
            None,
        )
        row(
            "Redis memory per idle actor, bytes",
            fmt(tk["bytes_per_idle_actor"], 0),
            "",
            None,
            "-",
            None,
        )
    if "recovery" in r:
        rc = r["recovery"]
        ours = max(rc["actor_trials"])
        limit = rc["lease_seconds"] + 2 * rc["tick_interval"] + rc["step_seconds"]
        plain_t = max(rc["plain_trials"]) if rc["plain_trials"] else float("nan")
        row(
            f"recovery after SIGKILL mid-step, s (worst of {len(rc['actor_trials'])}; step "
            f"{rc['step_seconds']:g} s)",
            fmt(ours),
            f"{fmt(plain_t)} (acks_late, visibility_timeout={rc['visibility_timeout']} s)",
            ours / plain_t,
            f"<= {limit:g} s (lease+2 ticks+step)",
            ours <= limit,
        )
        if rc.get("detection_delays"):
            worst = max(rc["detection_delays"])
            tick = rc["tick_interval"]
            row(
                f"lost worker: worker_lost recorded after lease expiry, s (worst of "
                f"{len(rc['detection_delays'])})",
                f"{fmt(worst)} ({worst / tick:.2f} ticks)",
                "no lease (visibility_timeout)",
                None,
                f"<= {tick:g} s (1 tick)",
                worst <= tick,
            )
        row(
            "  plain Celery with the default visibility_timeout",
            "",
            ">= 3600 (not waited for)",
            None,
            "-",
            None,
        )
    if "throughput" in r:
        t = r["throughput"]
        a, p = t["actor_worker"], t["plain_worker"]
        row(
            f"worker RSS, MB (main + {cfg.concurrency} children)",
            fmt(a["rss_mb"], 1),
            fmt(p["rss_mb"], 1) + " (plain worker)",
            a["rss_mb"] / p["rss_mb"],
            "-",
            None,
        )
    return rows


def render(rows: list[list[str]]) -> str:
    header = ["metric", "celery_supervise", "plain Celery / baseline", "ratio", "target", "met?"]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in table
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(r: dict[str, Any]) -> None:
    """The numbers behind the table, for the curious and for docs/performance.md."""
    print("\ndetails:")
    if "throughput" in r:
        t = r["throughput"]
        for label, key in (
            ("celery_supervise", "actor_trials"),
            ("plain Celery    ", "plain_trials"),
        ):
            print(
                f"  throughput {label}: "
                + "; ".join(
                    f"{x['rate']:,.0f} msg/s ({t['messages']} in {x['seconds']:.2f} s, sending "
                    f"{x['send_seconds']:.2f} s)"
                    for x in t[key]
                )
            )
            print(f"    CPU seconds during the first trial: {t[key][0]['cpu']}")
        a, p = t["actor_worker"], t["plain_worker"]
        print(
            f"  worker memory: celery_supervise RSS {a['rss_mb']:.1f} MB PSS {a['pss_mb']:.1f} MB;"
            f" plain RSS {p['rss_mb']:.1f} MB PSS {p['pss_mb']:.1f} MB "
            f"({a['processes']} processes each)"
        )
    if "latency" in r:
        for name, v in r["latency"].items():
            print(
                f"  latency {name:12s} p50 {v['p50']:.3f} ms  p99 {v['p99']:.3f} ms  "
                f"mean {v['mean']:.3f} ms  (n={v['n']})"
            )
    if "tick" in r:
        tk = r["tick"]
        for size in ("small", "big"):
            for kind in ("due", "empty"):
                v = tk[size][kind]
                print(
                    f"  tick {tk[size]['idle']:>9,} idle, {kind:5s}: mean {v['mean_ms']:.2f} ms "
                    f"p50 {v['p50_ms']:.2f} p99 {v['p99_ms']:.2f} over {v['ticks']} ticks; "
                    f"outcomes/tick {v['outcomes_per_tick']}"
                )
        for size in ("small", "big"):
            v = tk[size]
            print(
                f"  bulk load {v['idle']:,} idle actors: {v['dbsize']:,} keys, "
                f"{v['used_memory_mb']:.0f} MB used_memory, {v['bytes_per_idle_actor']:.0f} B "
                f"per actor, loaded in {v['load_seconds']:.1f} s"
            )
        md = tk["many_due"]
        print(
            f"  tick with {md['due']:,} due actors (half restarts, half timers): mean "
            f"{md['mean_ms']:.0f} ms over {md['ticks']} ticks = "
            f"{md['mean_ms'] / md['due']:.2f} ms per due actor; outcomes/tick "
            f"{md['outcomes_per_tick']}"
        )
        print(
            f"  idle actor template: {tk['template_fields']} meta fields, "
            f"{tk['template_history']} history entries"
        )
    if "recovery" in r:
        rc = r["recovery"]
        for offset, phases in zip(rc["kill_offsets"], rc["actor_phases"], strict=True):
            print(
                f"  recovery, killed {offset:.2f} s into the step; s after SIGKILL: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
            )
        if rc.get("detection_delays"):
            print(
                "  detection delay (worker_lost recorded - lease expiry), s: "
                f"{[round(x, 3) for x in rc['detection_delays']]}"
            )
        print(
            f"  recovery trials: celery_supervise {[round(x, 2) for x in rc['actor_trials']]} s;"
            f" plain (visibility_timeout={rc['visibility_timeout']} s, restore sweep every 1 s) "
            f"{[round(x, 2) for x in rc['plain_trials']]} s"
        )
