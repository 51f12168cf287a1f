"""CPU time and RSS of a server's whole process tree, and of the machine, read from /proc."""
import os
import resource
import threading

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_stat(pid):
    """(ppid, cpu_ticks incl. reaped children, rss_pages) or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(b")") + 2:].split()
    # rest[0] is field 3 (state)
    ppid = int(rest[1])
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    rss = int(rest[21])
    return ppid, ticks, rss


def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
        return int(s[s.rfind(b")") + 2:].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def all_pids():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            out.append(int(name))
    return out


def tree(root):
    """The pids of root and all its descendants; root may be a list of roots (a server and the
    database server it uses: both trees are the peer's)."""
    roots = list(root) if isinstance(root, (list, tuple)) else [root]
    children = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    out, todo, seen = [], roots, set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def tree_pss(pids):
    """Proportional set size (bytes) summed over pids: pages shared by several processes (PostgreSQL's
    shared buffers, a forking server's copy-on-write pages) are divided among them, so unlike the RSS
    sum they count once. None when /proc/<pid>/smaps_rollup cannot be read."""
    total, seen = 0, 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        seen += 1
                        break
        except (OSError, ValueError, IndexError):
            pass
    return total if seen else None


def tree_usage(pids):
    """(cpu seconds, rss bytes) summed over pids still alive."""
    ticks = rss = 0
    for p in pids:
        st = read_stat(p)
        if st:
            ticks += st[1]
            rss += st[2]
    return ticks / CLK_TCK, rss * PAGE


class Sampler(threading.Thread):
    """Samples the summed RSS of a process tree every `interval` seconds."""

    def __init__(self, root, interval=0.1):
        # root: a pid or a list of pids (see tree)
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        pids = tree(self.root)
        n = 0
        while not self._halt.is_set():
            if n % 10 == 9:
                pids = tree(self.root)      # re-scan /proc once a second
            _, rss = tree_usage(pids)
            self.peak = max(self.peak, rss)
            self.samples += 1
            n += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)


def machine_busy():
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
