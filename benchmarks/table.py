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
        for t in r["throughput"]["rows"]:
            ratio = t["actor_rate"] / t["plain_rate"]
            row(
                f"throughput, msg/s ({t['label']})",
                fmt(t["actor_rate"]),
                fmt(t["plain_rate"]) + " (plain tasks)",
                ratio,
                f">= {t['target']:g}x",
                ratio >= t["target"],
            )
            a, p = t["actor_cpu_ms"], t["plain_cpu_ms"]
            row(
                "  CPU ms/msg: sender / worker main / pool / Redis",
                cpu_split(a),
                cpu_split(p),
                sum(a.values()) / sum(p.values()),
                "-",
                None,
            )
    if "latency" in r:
        lat = r["latency"]
        s, w, base, ap = lat["send"], lat["wake"], lat["set"], lat["apply_async"]
        shown = [("actor already scheduled", s), ("wakes idle actor, a run live", w)]
        if "wake_publish" in lat:  # results of runs before the ready set lack these
            shown += [("wakes idle actor, no run live: + publish", lat["wake_publish"]),
                      ("creates the actor, a run live", lat["create"])]
        for label, series in shown:
            for pct in ("p50", "p99"):
                ratio = series[pct] / base[pct]
                targeted = pct == "p50" and not label.startswith("creates")
                row(
                    f"send {pct}, ms ({label})",
                    fmt(series[pct], 3),
                    fmt(base[pct], 3) + " (redis SET)",
                    ratio,
                    "<= 3x" if targeted else "-",
                    ratio <= 3 if targeted else None,
                )
        row(
            "  for reference: apply_async p50 / p99, ms",
            "",
            f"{fmt(ap['p50'], 3)} / {fmt(ap['p99'], 3)}",
            None,
            "-",
            None,
        )
    if "settle" in r:
        st = r["settle"]
        one, two = st["seconds_1"], st["seconds_2"]
        row(
            f"settle {st['actors']:,} due actors (timers), s: 1 worker / 2 workers",
            f"{one:.2f} / {two:.2f}",
            "",
            None,
            "<= 5 s with 2 workers",
            two <= 5.0,
        )
    if "replica-acks" in r:
        ra = r["replica-acks"]
        for pct in ("p50", "p99"):
            ratio = ra["acks1"][pct] / ra["acks0"][pct]
            row(
                f"send {pct}, ms, supervise_replica_acks=1 vs 0 (1 replica)",
                fmt(ra["acks1"][pct], 3),
                fmt(ra["acks0"][pct], 3) + f" (acks 0; SET {fmt(ra['set'][pct], 3)})",
                ratio,
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
    if "memory" in r:
        mem = r["memory"]
        per = mem["bytes_per_actor"]
        row(
            f"Redis memory per idle actor after one step, bytes ({mem['state_bytes']}-byte state)",
            fmt(per, 0),
            "",
            None,
            "<= 300 B",
            per <= 300,
        )
    for section in ("recovery", "recovery-fast"):
        if section not in r:
            continue
        rc = r[section]
        ours = max(rc["actor_trials"])
        lease, tick, step = rc["lease_seconds"], rc["tick_interval"], rc["step_seconds"]
        limit = lease + tick + step
        if rc.get("plain_trials"):
            plain_t: float | None = max(rc["plain_trials"])
            base = f"{fmt(max(rc['plain_trials']))} (acks_late, visibility_timeout="
            base += f"{rc['visibility_timeout']} s)"
        else:
            plain_t, base = None, ""
        row(
            f"recovery after SIGKILL mid-step, s (lease {lease:g} s, tick {tick:g} s, step "
            f"{step:g} s; worst of {len(rc['actor_trials'])})",
            fmt(ours),
            base,
            None if plain_t is None else ours / plain_t,
            f"<= {limit:g} s (lease+tick+step)",
            ours <= limit,
        )
        if rc.get("detection_delays"):
            worst = max(rc["detection_delays"])
            row(
                f"  worker_lost recorded after lease expiry, s (worst of "
                f"{len(rc['detection_delays'])})",
                f"{fmt(worst)} ({worst / tick:.2f} ticks)",
                "",
                None,
                f"<= {tick:g} s (1 tick)",
                worst <= tick,
            )
        if "plain_trials" in rc:
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


def cpu_split(ms: dict[str, float]) -> str:
    order = ("sender (this process)", "worker main", "pool children", "redis")
    return " / ".join(f"{ms[k]:.3f}" for k in order)


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
        for row_ in t["rows"]:
            print(f"  throughput, {row_['label']}:")
            for label, key, cpu in (
                ("celery_supervise", "actor_trials", "actor_cpu_ms"),
                ("plain Celery    ", "plain_trials", "plain_cpu_ms"),
            ):
                print(
                    f"    {label}: "
                    + "; ".join(
                        f"{x['rate']:,.0f} msg/s ({x['messages']} in {x['seconds']:.2f} s, "
                        f"sending {x['send_seconds']:.2f} s)"
                        for x in row_[key]
                    )
                )
                ms = row_[cpu]
                total = sum(ms.values())
                print(
                    f"      CPU ms per message, all trials: {total:.3f} = "
                    + ", ".join(f"{k} {v:.3f} ({100 * v / total:.0f} %)" for k, v in ms.items())
                )
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
    if "memory" in r:
        mem = r["memory"]
        print(
            f"  memory: {mem['actors']:,} actors after one step: {mem['bytes_per_actor']:.0f} B "
            f"and {mem['keys_per_actor']:.2f} keys per actor after two ticks "
            f"({mem['bytes_per_actor_before_tick']:.0f} B, "
            f"{mem['keys_per_actor_before_tick']:.2f} keys right after the step); state "
            f"{mem['state_bytes']} B, {mem['history_entries']} history entries"
        )
        print(
            "    one actor's keys (MEMORY USAGE, B): "
            + ", ".join(
                f"{k.rsplit(':', 1)[-1]} ({v['type']}) {v['memory_usage']}"
                for k, v in mem["own_keys"].items()
            )
        )
        print(
            f"    its meta hash, {len(mem['meta_fields'])} fields (value bytes): "
            + ", ".join(f"{k} {v}" for k, v in mem["meta_fields"].items())
        )
    for section in ("recovery", "recovery-fast"):
        if section not in r:
            continue
        rc = r[section]
        print(
            f"  {section} (lease {rc['lease_seconds']:g} s, tick {rc['tick_interval']:g} s, "
            f"step {rc['step_seconds']:g} s):"
        )
        for offset, phases in zip(rc["kill_offsets"], rc["actor_phases"], strict=True):
            print(
                f"    killed {offset:.2f} s into the step; s after SIGKILL: "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
            )
        if rc.get("detection_delays"):
            print(
                "    detection delay (worker_lost recorded - lease expiry), s: "
                f"{[round(x, 3) for x in rc['detection_delays']]}"
            )
        line = f"    trials: celery_supervise {[round(x, 2) for x in rc['actor_trials']]} s"
        if "plain_trials" in rc:
            line += (
                f"; plain (visibility_timeout={rc['visibility_timeout']} s, restore sweep every "
                f"1 s) {[round(x, 2) for x in rc['plain_trials']]} s"
            )
        print(line)
