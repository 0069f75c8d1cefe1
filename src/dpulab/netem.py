"""Link impairments: delay, jitter, loss and rate, applied with `tc` on the lab's interfaces.

A rate alone is a token bucket (`tbf`); delay, jitter and loss go to the kernel's network
emulator (`netem`, module sch_netem). Kernels built without it (CONFIG_NET_SCH_NETEM not
set) refuse that qdisc: loss then falls back to a classic-BPF filter on the interface's
clsact egress hook (cls_bpf, direct action: drop at random), and delay or jitter fail with
one line naming the missing module. Rate works everywhere.

Everything acts on an interface's egress: impairing one interface slows one direction.
A lab file's rules (`impairments:`) name a pair's VF links or one link and are applied to
both ends of each (both directions); `dpulab netem set` works on one interface, as `tc`
does. `tc` runs inside the node's namespace through `nsenter`, one `tc -batch` per
namespace, always as an argv list.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from . import namespaces
from .errors import DpulabError, InputError

if TYPE_CHECKING:
    from .engines import Engine
    from .spec import Impairment, LabSpec
    from .state import LabState
    from .topology import Topology

NETEM_MODULE = "sch_netem"
NETEM_CONFIG = "CONFIG_NET_SCH_NETEM"
# what tc (or the kernel through it) says when a qdisc kind does not exist
_UNKNOWN_QDISC = ("specified qdisc kind is unknown", "unknown qdisc", "unknown qdisc kind")

# -- units -------------------------------------------------------------------------------
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|usec|ms|msec|s|sec)\s*$", re.I)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps)\s*$", re.I)
_TIME_US = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 1_000_000, "sec": 1_000_000}
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_time(value: str) -> int:
    """'50ms' -> 50000 (microseconds); us, ms and s, at most 60 s."""
    m = _TIME.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a time: use e.g. '50ms', '200us', '1s'")
    us = round(float(m.group(1)) * _TIME_US[m.group(2).lower()])
    if us > 60_000_000:
        raise ValueError(f"{value!r}: at most 60s")
    return us


def parse_percent(value: str) -> float:
    """'1%' -> 1.0; 0 to 100."""
    m = _PERCENT.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a percentage: use e.g. '1%', '0.5%'")
    pct = float(m.group(1))
    if pct > 100:
        raise ValueError(f"{value!r}: at most 100%")
    return pct


def parse_rate(value: str) -> int:
    """'100mbit' -> 100_000_000 (bits/s). As in tc: kbit/mbit/gbit are bits, kbps/mbps/gbps bytes."""
    m = _RATE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a rate: use e.g. '100mbit', '1gbit', '500kbit' (or bytes/s: '10mbps')")
    bits = float(m.group(1)) * _SI[m.group(2).lower()] * (8 if m.group(3).lower() == "bps" else 1)
    if bits < 8:
        raise ValueError(f"{value!r}: at least 8bit")
    if bits > 10**13:
        raise ValueError(f"{value!r}: at most 10tbit")
    return int(bits)


def fmt_time(us: float) -> str:
    return f"{us / 1e6:g}s" if us >= 1e6 else f"{us / 1e3:g}ms" if us >= 1000 else f"{us:g}us"


def fmt_rate(bits: float) -> str:
    for unit, scale in (("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g}{unit}"
    return f"{bits:g}bit"


@dataclass(frozen=True)
class Params:
    """One interface's impairment, in numbers."""

    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0
    rate_bits: int = 0

    @classmethod
    def parse(
        cls, delay: str | None = None, jitter: str | None = None, loss: str | None = None, rate: str | None = None
    ) -> "Params":
        try:
            p = cls(
                parse_time(delay) if delay else 0,
                parse_time(jitter) if jitter else 0,
                parse_percent(loss) if loss else 0.0,
                parse_rate(rate) if rate else 0,
            )
        except ValueError as e:
            raise InputError(str(e)) from None
        if p.jitter_us and not p.delay_us:
            raise InputError("jitter needs a delay (jitter varies the delay)")
        if not p:
            raise InputError("nothing to set: give --delay, --jitter, --loss or --rate")
        return p

    @classmethod
    def of(cls, imp: "Impairment") -> "Params":
        return cls.parse(imp.delay, imp.jitter, imp.loss, imp.rate)

    def __bool__(self) -> bool:
        return bool(self.delay_us or self.loss_pct or self.rate_bits)

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_us or self.jitter_us or self.loss_pct)

    def describe(self) -> str:
        parts = []
        if self.delay_us:
            parts.append(f"delay {fmt_time(self.delay_us)}" + (f" ±{fmt_time(self.jitter_us)}" if self.jitter_us else ""))
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if self.rate_bits:
            parts.append(f"rate {fmt_rate(self.rate_bits)}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "delay": fmt_time(self.delay_us) if self.delay_us else None,
            "jitter": fmt_time(self.jitter_us) if self.jitter_us else None,
            "loss": f"{self.loss_pct:g}%" if self.loss_pct else None,
            "rate": fmt_rate(self.rate_bits) if self.rate_bits else None,
        }

    def qdisc(self, mtu: int = 1500) -> list[str]:
        """The tc words after `root`: netem for delay/jitter/loss (with its own rate), else tbf."""
        if self.needs_netem:
            words = ["netem"]
            if self.delay_us:
                words += ["delay", f"{self.delay_us}us"]
                if self.jitter_us:
                    words += [f"{self.jitter_us}us"]
            if self.loss_pct:
                words += ["loss", f"{self.loss_pct:g}%"]
            if self.rate_bits:
                words += ["rate", f"{self.rate_bits}bit"]
            return words
        # a bucket that holds 10 ms of the rate, never less than two full frames
        burst = max(self.rate_bits // 8 // 100, 2 * (mtu + 14), 3200)
        return ["tbf", "rate", f"{self.rate_bits}bit", "burst", f"{burst}b", "latency", "100ms"]


# -- running tc --------------------------------------------------------------------------
class NetemMissing(DpulabError):
    """The kernel has no netem qdisc."""


def netem_missing_message(iface: str = "", ns: str = "") -> str:
    where = f"{ns}/{iface}: " if iface else ""
    return (
        f"{where}delay and jitter need the kernel's netem qdisc, which this kernel does not have "
        f"(module {NETEM_MODULE}, {NETEM_CONFIG}); rate (tbf) and loss (BPF filter) work without it"
    )


def _tc_binary() -> str:
    tc = shutil.which("tc")
    if tc is None:
        raise DpulabError("tc is not installed (Debian: iproute2)")
    return tc


def tc(ns: str, *args: str, batch: Iterable[str] | None = None) -> subprocess.CompletedProcess:
    """`tc ARGS` inside a namespace (or `tc -batch -` fed `batch`, which stops at the first
    failure): argv, never a shell."""
    argv = ["nsenter", f"--net={namespaces.path(ns)}", "--", _tc_binary(), *args]
    stdin = None
    if batch is not None:
        argv += ["-batch", "-"]
        stdin = "".join(line + "\n" for line in batch)
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise DpulabError("nsenter is not installed (Debian: util-linux)") from None
    except subprocess.TimeoutExpired:
        raise DpulabError(f"tc in {ns} timed out") from None


def _first_error(res: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (res.stderr or res.stdout).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Command failed")]
    return lines[0] if lines else f"exit {res.returncode}"


def _is_unknown_qdisc(text: str) -> bool:
    low = text.lower()
    return any(s in low for s in _UNKNOWN_QDISC)


# -- loss without netem: a classic-BPF filter on the clsact egress hook -------------------
# cls_bpf in direct-action mode takes the program's return value as the verdict: the program
# loads a random number (ancillary load SKF_AD_RANDOM) and returns TC_ACT_SHOT below the
# threshold, TC_ACT_UNSPEC (carry on) above it. Needs only cls_bpf and clsact (sch_ingress).
LOSS_PREF = 49  # the filter's priority: how dpulab finds its own filter again
_SKF_AD_RANDOM = (0xFFFFF000 + 56)  # SKF_AD_OFF + SKF_AD_RANDOM
_TC_ACT_SHOT, _TC_ACT_UNSPEC = 2, 0xFFFFFFFF
_BPF_LD_W_ABS, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x35, 0x06


def loss_bytecode(pct: float) -> str:
    t = min(2**32 - 1, round(pct / 100 * 2**32))
    insns = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_BPF_JGE_K, 1, 0, t), (_BPF_RET_K, 0, 0, _TC_ACT_SHOT),
             (_BPF_RET_K, 0, 0, _TC_ACT_UNSPEC)]
    return f"{len(insns)}," + ",".join(f"{c} {jt} {jf} {k}" for c, jt, jf, k in insns)


def _loss_of_filter(f: dict[str, Any]) -> float | None:
    """The loss of one of our filters (from `tc -j filter show`), None if it is not ours."""
    insns = ((f.get("options") or {}).get("bytecode") or {}).get("insns") or []
    if f.get("pref") != LOSS_PREF or f.get("kind") != "bpf" or len(insns) != 4:
        return None
    shape = [(i.get("code"), i.get("jt"), i.get("jf")) for i in insns]
    if shape != [(_BPF_LD_W_ABS, 0, 0), (_BPF_JGE_K, 1, 0), (_BPF_RET_K, 0, 0), (_BPF_RET_K, 0, 0)]:
        return None
    if insns[0]["k"] != _SKF_AD_RANDOM or insns[2]["k"] != _TC_ACT_SHOT or insns[3]["k"] != _TC_ACT_UNSPEC:
        return None
    return round(insns[1]["k"] / 2**32 * 100, 4)


# -- reading what is set -----------------------------------------------------------------
def _secs_to_us(v: Any) -> int:
    try:
        return round(float(v) * 1e6)
    except (TypeError, ValueError):
        return 0


def params_from_tc(q: dict[str, Any]) -> Params | None:
    """A root qdisc from `tc -j qdisc show`, as Params; None if it is not an impairment."""
    kind, o = q.get("kind"), q.get("options") or {}
    if kind == "tbf":
        return Params(rate_bits=int(o.get("rate", 0)) * 8)
    if kind == "netem":
        delay = o.get("delay") or {}
        loss = o.get("loss-random") or {}
        rate = o.get("rate") or {}
        return Params(
            delay_us=_secs_to_us(delay.get("delay")),
            jitter_us=_secs_to_us(delay.get("jitter")),
            loss_pct=round(float(loss.get("loss", 0)) * 100, 6),
            rate_bits=int(rate.get("rate", 0)) * 8,
        )
    return None


def _json(ns: str, *args: str) -> list[dict[str, Any]]:
    res = tc(ns, "-j", *args)
    if res.returncode != 0:
        raise DpulabError(f"tc in {ns}: {_first_error(res)}")
    try:
        return json.loads(res.stdout or "[]")
    except ValueError:
        raise DpulabError(f"tc in {ns}: unreadable JSON from `tc -j {' '.join(args)}`") from None


def show(ns: str) -> dict[str, dict[str, Any]]:
    """Interfaces of a namespace that are impaired, read from the kernel:
    iface -> {kind, params (all of it), root (the root qdisc's Params or None),
    loss_filter (our BPF loss, % or None), clsact, other_filters}."""
    rows = _json(ns, "qdisc", "show")
    out: dict[str, dict[str, Any]] = {}
    roots = {q["dev"]: params_from_tc(q) for q in rows if q.get("root")}
    clsact = {q["dev"] for q in rows if q.get("kind") == "clsact"}
    for dev in set(roots) | clsact:
        root = roots.get(dev)
        loss, others = None, 0
        if dev in clsact:
            for hook in ("egress", "ingress"):
                for f in _json(ns, "filter", "show", "dev", dev, hook):
                    if "options" not in f:
                        continue  # the chain/priority header line
                    pct = _loss_of_filter(f) if hook == "egress" else None
                    if pct is None:
                        others += 1
                    else:
                        loss = pct
        if root is None and loss is None:
            continue
        kinds = ([next(q["kind"] for q in rows if q.get("root") and q["dev"] == dev)] if root else []) + (["bpf loss"] if loss else [])
        params = Params(root.delay_us, root.jitter_us, root.loss_pct, root.rate_bits) if root else Params()
        if loss:
            params = Params(params.delay_us, params.jitter_us, loss, params.rate_bits)
        out[dev] = {"kind": " + ".join(kinds), "params": params, "root": root, "loss_filter": loss,
                    "clsact": dev in clsact, "other_filters": others}
    return out


# -- setting ------------------------------------------------------------------------------
_netem_known: bool | None = None  # whether this kernel has netem, once a try has told us


def _lines(settings: dict[str, "Params | None"], have: dict[str, dict[str, Any]], mtus: dict[str, int], bpf_loss: bool) -> list[str]:
    lines: list[str] = []
    for iface, p in settings.items():
        h = have.get(iface) or {}
        if p is None:
            root, loss = Params(), 0.0
        elif bpf_loss and p.loss_pct:
            root, loss = Params(rate_bits=p.rate_bits), p.loss_pct
        else:
            root, loss = p, 0.0
        if root:
            lines.append(" ".join(["qdisc", "replace", "dev", iface, "root", *root.qdisc(mtus.get(iface, 1500))]))
        elif h.get("root") is not None:
            lines.append(f"qdisc del dev {iface} root")
        if loss:
            if not h.get("clsact"):
                lines.append(f"qdisc add dev {iface} clsact")
            lines.append(f'filter replace dev {iface} egress pref {LOSS_PREF} handle 1 bpf da bytecode "{loss_bytecode(loss)}"')
        elif h.get("loss_filter") is not None:
            lines.append(f"filter del dev {iface} egress pref {LOSS_PREF}")
            if not h.get("other_filters"):
                lines.append(f"qdisc del dev {iface} clsact")
    return lines


def apply(ns: str, settings: dict[str, Params | None], mtus: dict[str, int] | None = None) -> str:
    """Set (Params) or clear (None) each interface's impairment in one namespace, with one
    `tc -batch`. Delay, jitter and loss go to netem; without netem, loss alone is a BPF
    filter and delay or jitter fail with one line. Returns how: 'netem', 'tbf', 'bpf loss'…"""
    global _netem_known
    if not settings:
        return ""
    mtus = mtus or {}
    # netem first: if the kernel refuses it, the batch stops before changing anything
    settings = dict(sorted(settings.items(), key=lambda kv: not (kv[1] is not None and kv[1].needs_netem)))
    wants_netem = any(p is not None and p.needs_netem for p in settings.values())
    bpf_loss = _netem_known is False
    if bpf_loss and any(p is not None and (p.delay_us or p.jitter_us) for p in settings.values()):
        iface = next(i for i, p in settings.items() if p is not None and (p.delay_us or p.jitter_us))
        raise NetemMissing(netem_missing_message(iface, ns))
    res = tc(ns, batch=_lines(settings, show(ns), mtus, bpf_loss))
    if res.returncode != 0 and not bpf_loss and wants_netem and _is_unknown_qdisc(res.stderr + res.stdout):
        _netem_known = False
        delayed = [i for i, p in settings.items() if p is not None and (p.delay_us or p.jitter_us)]
        if delayed:
            raise NetemMissing(netem_missing_message(delayed[0], ns))
        bpf_loss = True
        res = tc(ns, batch=_lines(settings, show(ns), mtus, True))
    if res.returncode != 0:
        raise DpulabError(f"tc in {ns}: {_first_error(res)}")
    if wants_netem and not bpf_loss:
        _netem_known = True
    kinds = {("netem" if p.needs_netem and not bpf_loss else "tbf" if p.rate_bits else "")
             + (" + bpf loss" if bpf_loss and p.loss_pct and p.rate_bits else "bpf loss" if bpf_loss and p.loss_pct else "")
             for p in settings.values() if p is not None}
    return ", ".join(sorted(k for k in kinds if k)) or "cleared"


def set_one(ns: str, iface: str, p: Params, mtu: int = 1500) -> str:
    return apply(ns, {iface: p}, {iface: mtu})


def clear_one(ns: str, iface: str) -> bool:
    """Remove the interface's impairment; False if it had none."""
    if iface not in show(ns):
        return False
    apply(ns, {iface: None})
    return True


def netem_supported(ns: str, iface: str = "lo") -> bool:
    """Whether the kernel knows netem: try it on an interface, and take it off again."""
    res = tc(ns, "qdisc", "replace", "dev", iface, "root", "netem", "delay", "1ms")
    if res.returncode == 0:
        tc(ns, "qdisc", "del", "dev", iface, "root")
        return True
    if _is_unknown_qdisc(res.stderr + res.stdout):
        return False
    raise DpulabError(f"tc in {ns}: {_first_error(res)}")


# -- the lab file's rules ----------------------------------------------------------------
def parse_vf_set(text: str | None, vfs: int | None = None) -> list[int] | None:
    """'2..7', '3', '2,4,8..11' -> sorted indices; None for None (every VF)."""
    if text is None:
        return None
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\.\.(\d+))?", part)
        if not m:
            raise ValueError(f"{text!r}: VFs are written '3', '2..7' or '2,4,8..11'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"{part!r}: a range runs low..high")
        if vfs is not None and hi >= vfs:
            raise ValueError(f"VF {hi} does not exist (the lab has VFs 0..{vfs - 1})")
        out.update(range(lo, hi + 1))
    return sorted(out)


@dataclass
class Target:
    ns: str
    iface: str
    what: str  # a human name of the link end, e.g. "dpu-worker eth0-3"


@dataclass
class Resolved:
    """Every interface the rules touch, with its Params."""

    by_ns: dict[str, dict[str, Params]] = field(default_factory=dict)

    def add(self, ns: str, iface: str, p: Params) -> None:
        self.by_ns.setdefault(ns, {})[iface] = p

    def flat(self) -> dict[str, Params]:
        return {f"{ns}/{i}": p for ns, d in self.by_ns.items() for i, p in d.items()}


def node_by_short(topo: "Topology", name: str):
    """A node by its name, with or without the lab prefix ('worker2' or 'dpu-worker2')."""
    for n in topo.nodes:
        if name in (n.name, n.name.removeprefix(f"{topo.lab}-")):
            return n
    return None


def resolve_rules(
    topo: "Topology", engine: "Engine", held: dict[tuple[str, int], str] | None = None
) -> Resolved:
    """The spec's impairment rules, as (namespace, interface) -> Params. Later rules win."""
    from .topology import CLUSTER_IFNAME, bridge_port_name

    spec: "LabSpec" = topo.spec
    held = held or {}
    out = Resolved()
    cns = getattr(engine, "cluster_ns", None)
    for k, rule in enumerate(getattr(spec, "impairments", ()) or ()):
        p = Params.of(rule)
        if rule.pair is not None:
            pair = topo.pairs[rule.pair]
            want = parse_vf_set(rule.vfs, spec.vfs)
            for link in topo.links(pair):
                if want is not None and link.index not in want:
                    continue
                if (link.host, link.index) in held:
                    out.add(held[(link.host, link.index)], "eth0", p)
                else:
                    out.add(engine.netns(link.host), link.host_ifname, p)
                out.add(engine.netns(link.dpu), link.rep_ifname, p)
            continue
        node_name, _, iface = (rule.link or "").partition(":")
        node = node_by_short(topo, node_name)
        if node is None:
            raise InputError(f"impairments[{k}].link: {node_name!r} is not a node of lab {topo.lab}")
        if iface == CLUSTER_IFNAME and node.role != "host":
            out.add(engine.netns(node.name), CLUSTER_IFNAME, p)
            if cns:
                out.add(cns, bridge_port_name(node.worker), p)
            continue
        for link in (topo.links(topo.pair_of(node.name)) if node.role != "control-plane" else ()):
            if iface in (link.host_ifname if node.role == "host" else link.rep_ifname,):
                if (link.host, link.index) in held:
                    out.add(held[(link.host, link.index)], "eth0", p)
                else:
                    out.add(engine.netns(link.host), link.host_ifname, p)
                out.add(engine.netns(link.dpu), link.rep_ifname, p)
                break
        else:
            raise InputError(f"impairments[{k}].link: {node.name} has no lab link {iface!r}")
    return out


STATE_KEY = "impairments"  # in the lab's state: what the lab file's rules last applied, "ns/iface" -> params


def converge(topo: "Topology", engine: "Engine", state: "LabState", socks) -> dict[str, int]:
    """Make the kernel carry the spec's impairments: set what changed, clear what the spec dropped.

    Only interfaces a rule named are touched; run-time `netem set` settings are left alone."""
    from .lab import held_vfs

    want = resolve_rules(topo, engine, held_vfs(state))
    before: dict[str, dict] = state.data.get(STATE_KEY, {})
    flat = want.flat()
    todo: dict[str, dict[str, Params | None]] = {}
    for key in set(before) - set(flat):
        ns, iface = key.split("/", 1)
        if namespaces.exists(ns):
            todo.setdefault(ns, {})[iface] = None
    for ns, ifaces in want.by_ns.items():
        have = show(ns) if ifaces else {}
        for iface, p in ifaces.items():
            if have.get(iface, {}).get("params") != p:
                todo.setdefault(ns, {})[iface] = p
    for ns, settings in todo.items():
        links = socks(ns).links()
        missing = [i for i, p in settings.items() if p is not None and i not in links]
        if missing:
            raise DpulabError(f"impairment on {ns}/{missing[0]}: no such interface")
        apply(ns, settings, {i: links[i].mtu for i in settings if i in links})
    state.data[STATE_KEY] = {k: p.as_dict() for k, p in flat.items()}
    return {"set": sum(p is not None for s in todo.values() for p in s.values()),
            "cleared": sum(p is None for s in todo.values() for p in s.values())}


# -- measuring (for `verify --traffic`) ---------------------------------------------------
@dataclass
class Measured:
    sent: int
    rtts: list[float]

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - len(self.rtts)) / self.sent if self.sent else 0.0

    def describe(self) -> str:
        if not self.rtts:
            return f"{self.sent} probes, no reply (loss 100%)"
        r = sorted(self.rtts)
        return (
            f"rtt min/avg/max {r[0]:.2f}/{sum(r) / len(r):.2f}/{r[-1]:.2f} ms, "
            f"loss {self.loss_pct:.0f}% ({self.sent - len(r)}/{self.sent})"
        )


def measure(probes: list[tuple[str, str]], count: int = 10, timeout: float = 1.0) -> dict[tuple[str, str], Measured]:
    """`count` rounds of ICMP echo, every probe in flight at once in each round."""
    from . import probe

    got: dict[tuple[str, str], Measured] = {p: Measured(0, []) for p in probes}
    for _ in range(count):
        rtt = probe.ping(probes, timeout=timeout, tries=1)
        for p in probes:
            got[p].sent += 1
            if rtt.get(p) is not None:
                got[p].rtts.append(rtt[p])  # type: ignore[arg-type]
    return got


def impairment_checks(topo: "Topology", engine: "Engine", pods: list[dict]) -> list:
    """`verify --traffic`: RTT and loss measured between pods (10 probes each), next to the
    impairments the kernel has on their path: pod eth0, representor, DPU eth0, bridge port."""
    from .topology import CLUSTER_IFNAME, bridge_port_name
    from .verify import Check

    live = [p for p in pods if namespaces.exists(p["netns"])]
    pairs = [(a, b) for a in live for b in live if a is not b][:8]
    if not pairs:
        return []
    cns = getattr(engine, "cluster_ns", None)
    shown: dict[str, dict[str, dict]] = {}

    def on(ns: str | None, iface: str | None) -> list[str]:
        if not ns or not iface or not namespaces.exists(ns):
            return []
        if ns not in shown:
            try:
                shown[ns] = show(ns)
            except DpulabError:
                shown[ns] = {}
        q = shown[ns].get(iface)
        return [f"{ns.removeprefix(topo.lab + '-')}/{iface} {q['params'].describe()}"] if q else []

    got = measure([(a["netns"], b["ip"]) for a, b in pairs], count=10, timeout=1.0)
    out = []
    for a, b in pairs:
        m = got[(a["netns"], b["ip"])]
        imps: list[str] = []
        for pod in (a, b):
            dpu = topo.node(pod["dpu"])
            imps += on(pod["netns"], "eth0") + on(engine.netns(dpu.name), pod.get("representor"))
            if a["dpu"] != b["dpu"]:
                imps += on(engine.netns(dpu.name), CLUSTER_IFNAME) + on(cns, bridge_port_name(dpu.worker))
        imps = list(dict.fromkeys(imps))
        detail = m.describe() + ("; impaired: " + ", ".join(imps) if imps else "; nothing impaired on the path")
        out.append(Check("impairment", f"{a['name']} -> {b['name']}", bool(m.rtts), detail))
    return out
