"""Per-thread CPU time of processes, from /proc, for the benchmarks.

  thread_cpu.py snapshot PID... > FILE      what each thread has used so far
  thread_cpu.py report BEFORE REQUESTS PID...  CPU per request since BEFORE, by thread name

Times are utime + stime in clock ticks (USER_HZ); the kernel counts them per thread, so a
handler's main thread and ZeroMQ's I/O thread are told apart."""
import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid):
    """{thread id: (name, ticks)} for one process."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The name is in parentheses and may hold spaces; fields after it are fixed.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[tid] = (name, int(fields[11]) + int(fields[12]))
    return found


def snapshot(pids):
    return {pid: threads(pid) for pid in pids}


def report(before, requests, pids):
    after = snapshot(pids)
    for pid in pids:
        with open(f"/proc/{pid}/comm") as f:
            process = f.read().strip()
        used = []
        for tid, (name, ticks) in sorted(after[pid].items(), key=lambda item: int(item[0])):
            used.append((name, ticks - before.get(pid, {}).get(tid, (name, 0))[1]))
        total = sum(ticks for _, ticks in used)
        per = lambda ticks: ticks / TICK / requests * 1e6
        # Threads in creation order: the main thread first, then ZeroMQ's (a bundled libzmq
        # may leave them the process's name).
        parts = ", ".join(f"{name} {per(t):.2f}" for name, t in used if t)
        print(f"  CPU per request, {process} (pid {pid}): {per(total):.2f} µs ({parts})")


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        json.dump(snapshot(sys.argv[2:]), sys.stdout)
    else:
        with open(sys.argv[2]) as f:
            before = json.load(f)
        report(before, int(sys.argv[3]), sys.argv[4:])
