#!/usr/bin/env python3
"""PyTorch peers for `graph-attention bench`: the same inputs and masks, timed in PyTorch on CPU.

    python torch_peers.py --mask SPEC --tokens L --dim D --heads H [--repeats N] [--warmup N]
        [--threads T] [--peers sdpa_masked,sdpa_dense,flex] [--memory-limit-gib G] [--edges E.npy]
        [--flex-mask eager|compiled] [--timeout-s S] [--backward]
    python torch_peers.py --self-test

For each requested peer, one JSON object on its own line of stdout (everything else goes to stderr):

    {"peer": ..., "mask": SPEC, "tokens": L, "dim": D, "heads": H, "status": "ok"|"oom"|"unsupported"|"error",
     "median_seconds": float|null, "runs": [float, ...], "edges": int|null, "peak_rss_bytes": int|null,
     "reason": str|null, ...extra keys: "min_seconds", "threads", "torch", "mask_seconds", "first_call_seconds",
     "baseline_rss_bytes", "memory_estimate_bytes"}

Peers (each runs in its own subprocess, so peak_rss_bytes is per peer and an OOM kill takes only it):
  sdpa_masked  F.scaled_dot_product_attention(q, k, v, attn_mask=<dense bool [L, L] built from SPEC>)
  sdpa_dense   F.scaled_dot_product_attention(q, k, v) with no mask (is_causal=True only for SPEC == "causal"):
               the dense path a user falls back to; it computes all L*L pairs (a different result
               unless SPEC is full or causal)
  flex         torch.compile(flex_attention)(q, k, v, block_mask=create_block_mask(mask_mod, None, None, L, L,
               device="cpu")), mask_mod implementing SPEC

Inputs: torch.manual_seed(0); q, k, v = randn [1, H, L, D] fp32, in that order. Default scale 1/sqrt(D).
Timing: time.perf_counter around the attention call only (mask building and compilation excluded), median
of --repeats runs after --warmup runs (flex always has at least one warmup: the compiling call).
With --backward, the timed part is the backward alone: each run does an untimed forward with q, k, v requiring
gradients, then times out.backward(dO) for a fixed random dO (flex is reported unsupported: PyTorch's CPU
FlexAttention has no backward).

Mask grammar (see the repository README): full, causal, window:W, window:W:causal, dilated:W:D,
blocked:B:D, global:I,J,..., random:P:SEED, csr:INDPTR.npy:INDICES.npy, coo:ROWS.npy:COLS.npy,
mtx:FILE.mtx, joined with '+'. random needs --edges (the generator is the Swift engine's: dump it with
`graph-attention inspect --mask SPEC --tokens L --edges-out E.npy`); with --edges the whole mask comes
from that file (int [E, 2] of (query, key) pairs) and SPEC is only a label.
"""
import argparse
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

PEERS = ("sdpa_masked", "sdpa_dense", "flex")
HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 1 << 30


class Unsupported(Exception):
    """This peer cannot express the mask."""


class OverMemory(Exception):
    """The estimated memory exceeds --memory-limit-gib."""


# --------------------------------------------------------------------------------------------------
# Mask specification: the references' one parser (scripts/mask_grammar.py, plain Python, so the parent
# process never imports torch or NumPy)
# --------------------------------------------------------------------------------------------------

sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from mask_grammar import MaskError as SpecError, clamped, operands, parse_operand  # noqa: E402


def parse_spec(spec, L):
    """List of components (kind, params) of a '+'-joined spec, structured parameters clamped to L as the NumPy
    reference clamps them (clamping changes no edge); csr, coo and mtx operands are ("explicit", (op,))."""
    comps = []
    for op in operands(spec):
        kind, params = parse_operand(op)
        comps.append(("explicit", (op,)) if kind in ("csr", "coo", "mtx") else clamped(kind, params, L))
    return comps


def closed_form_edges(kind, p, L):
    """Exact edge count of one structured component, or None."""
    if kind == "full":
        return L * L
    if kind == "causal":
        return L * (L + 1) // 2
    if kind == "window":
        w = min(p[0], L - 1)
        return L * (2 * w + 1) - w * (w + 1)
    if kind == "window_causal":
        w = min(p[0], L - 1)
        return L * (w + 1) - w * (w + 1) // 2
    if kind == "dilated":
        W, s = p[0], p[1] + 1
        T = min(W, (L - 1) // s)          # offsets t*s with 1 <= t <= T fit; each keeps L - t*s rows
        return L + 2 * (T * L - s * T * (T + 1) // 2)
    if kind == "blocked":
        b, s = p[0], p[1] + 1
        total = 0
        for base in range(0, L, b):
            n = min(b, L - base)
            c = -(-n // s)                 # rows (i-base) % s == 0 and keys base + t*s, both ceil(n/s)
            total += c * c
        return total
    if kind == "global":
        g = len(p)
        return 2 * g * L - g * g
    return None


# --------------------------------------------------------------------------------------------------
# The peer itself (child process)
# --------------------------------------------------------------------------------------------------

def _load_edges(path, L):
    import numpy as np
    try:
        e = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise SpecError(f"cannot load --edges {path!r}: {err}") from None
    if e.ndim != 2 or e.shape[1] != 2 or (e.size and e.dtype.kind not in "iu"):
        raise SpecError(f"--edges {path!r} must be an integer array [E, 2], got {e.dtype} {e.shape}")
    e = e.astype(np.int64, copy=False)
    if e.size and (e.min() < 0 or e.max() >= L):
        raise SpecError(f"--edges {path!r}: index out of range [0, {L}) (min {e.min()}, max {e.max()})")
    return e


def _explicit_dense(op, L):
    """Dense numpy bool [L, L] of a csr/coo/mtx operand, via the repository's NumPy reference."""
    try:
        import numpy_reference as ref  # noqa: E402
    except ImportError as err:
        raise Unsupported(f"{op!r} needs scripts/numpy_reference.py to read it ({err}); or pass --edges") from None
    try:
        return ref._operand(op, L, L, None, None)  # noqa: SLF001 - the reference's own file readers
    except ref.MaskError as err:
        raise SpecError(str(err)) from None


class Mask:
    """A spec as a flex mask_mod, plus what it costs to materialise."""

    def __init__(self, spec, L, edges_path, limit_bytes, need_lookup):
        import numpy as np
        import torch
        self.L = L
        self.comps = parse_spec(spec, L)
        self.edges = None
        self.lookup = None          # dense torch bool [L, L] for explicit parts (memory-guarded)
        self.fns = []
        if edges_path is not None or any(k in ("random", "explicit") for k, _ in self.comps):
            if edges_path is None and any(k == "random" for k, _ in self.comps):
                raise Unsupported("random:P:SEED uses the Swift engine's generator; pass --edges E.npy from "
                                  "`graph-attention inspect --mask SPEC --tokens L --edges-out E.npy`")
            if need_lookup and L * L > limit_bytes:
                raise OverMemory(f"the explicit mask needs a dense bool [L, L] lookup of {L * L} bytes, over the "
                                 f"limit of {limit_bytes} bytes")
        if edges_path is not None:
            e = _load_edges(edges_path, L)
            dense = torch.zeros(L, L, dtype=torch.bool)
            if e.size:
                idx = torch.from_numpy(e)
                dense[idx[:, 0], idx[:, 1]] = True
            self.lookup = dense
            self.edges = int(dense.sum())
            self.fns = [lambda q, kv, d=dense: d[q, kv]]
            return
        explicit = [p[0] for k, p in self.comps if k == "explicit"]
        if explicit:
            m = np.zeros((L, L), dtype=bool)
            for op in explicit:
                m |= _explicit_dense(op, L)
            self.lookup = torch.from_numpy(m)
            self.fns.append(lambda q, kv, d=self.lookup: d[q, kv])
        for kind, p in self.comps:
            if kind != "explicit":
                self.fns.append(self._structured(kind, p, L))
        if len(self.comps) == 1:
            kind, p = self.comps[0]
            self.edges = int(self.lookup.sum()) if kind == "explicit" else closed_form_edges(kind, p, L)

    @staticmethod
    def _structured(kind, p, L):
        import torch
        if kind == "full":
            return lambda q, kv: (q >= 0) & (kv >= 0)
        if kind == "causal":
            return lambda q, kv: kv <= q
        if kind == "window":
            w = p[0]
            return lambda q, kv: (q - kv <= w) & (kv - q <= w)
        if kind == "window_causal":
            w = p[0]
            return lambda q, kv: (kv <= q) & (q - kv <= w)
        if kind == "dilated":
            s = p[1] + 1
            reach = min(p[0] * s, L)    # |i - j| < L anyway; keeps the constant inside int32
            return lambda q, kv: ((q - kv) % s == 0) & (q - kv <= reach) & (kv - q <= reach)
        if kind == "blocked":
            b, s = p[0], p[1] + 1

            def blocked(q, kv):
                base = (q // b) * b
                off = kv - base
                return ((q - base) % s == 0) & (off >= 0) & (off < b) & (off % s == 0)
            return blocked
        if kind == "global":
            toks = p
            if len(toks) <= 8:
                def few(q, kv):
                    m = (q == toks[0]) | (kv == toks[0])
                    for t in toks[1:]:
                        m = m | (q == t) | (kv == t)
                    return m
                return few
            is_global = torch.zeros(L, dtype=torch.bool)
            is_global[list(toks)] = True
            return lambda q, kv: is_global[q] | is_global[kv]
        raise AssertionError(kind)

    def mask_mod(self):
        fns = self.fns

        def mask_mod(b, h, q_idx, kv_idx):
            m = fns[0](q_idx, kv_idx)
            for f in fns[1:]:
                m = m | f(q_idx, kv_idx)
            return m
        return mask_mod

    def dense(self):
        """torch bool [L, L], evaluated in row chunks (temporaries stay ~100 MB)."""
        import torch
        L = self.L
        if self.lookup is not None and len(self.fns) == 1:
            return self.lookup
        out = torch.empty(L, L, dtype=torch.bool)
        kv = torch.arange(L, dtype=torch.int32).view(1, L)   # int32 like flex's indices, half the traffic
        rows = max(1, (1 << 24) // L)
        mm = self.mask_mod()
        for r0 in range(0, L, rows):
            r1 = min(L, r0 + rows)
            out[r0:r1] = mm(None, None, torch.arange(r0, r1, dtype=torch.int32).view(-1, 1), kv)
        return out

    def count_edges(self, max_pairs=1 << 28):
        """Exact edge count by chunked evaluation, only when L*L <= max_pairs (a union's count)."""
        import torch
        if self.edges is not None or self.L * self.L > max_pairs:
            return self.edges
        L = self.L
        kv = torch.arange(L, dtype=torch.int32).view(1, L)
        rows = max(1, (1 << 22) // L)
        mm = self.mask_mod()
        total = 0
        for r0 in range(0, L, rows):
            r1 = min(L, r0 + rows)
            total += int(mm(None, None, torch.arange(r0, r1, dtype=torch.int32).view(-1, 1), kv).sum())
        self.edges = total
        return total


def memory_estimate(peer, L, D, H, flex_mask, has_lookup):
    """Bytes the peer is expected to need at its peak (a guard, deliberately on the high side)."""
    io = 4 * 4 * H * L * D                          # q, k, v, out
    pairs = L * L
    if peer == "sdpa_dense":
        return io
    lookup = pairs if has_lookup else 0
    if peer == "sdpa_masked":
        # the bool mask and the float mask SDPA derives from it (the CPU flash kernel takes it in tiles);
        # measured here (torch 2.13): ~5.3 bytes/pair over the baseline at L = 8192 and 16384, the same
        # for H = 1 and 4
        return io + lookup + pairs * 6
    # flex: create_block_mask (eager) materialises the [L, L] mask with int64 temporaries (measured
    # ~10 bytes/pair at L = 16384; ~137 GB for the int64 tensor alone at L = 131072); compiled works in blocks
    build = pairs * 10 if flex_mask == "eager" else (L // 128 + 1) ** 2 * 16
    return io + lookup + build


def _rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _is_oom(err):
    text = str(err).lower()
    return isinstance(err, MemoryError) or any(s in text for s in (
        "not enough memory", "out of memory", "can't allocate", "cannot allocate", "failed to allocate",
        "std::bad_alloc", "defaultcpuallocator"))


def run_peer(a):
    """Runs one peer in this process; returns the result dict."""
    res = {"peer": a.child, "mask": a.mask, "tokens": a.tokens, "dim": a.dim, "heads": a.heads,
           "status": "error", "median_seconds": None, "runs": [], "edges": None, "peak_rss_bytes": None,
           "reason": None, "min_seconds": None, "threads": a.threads, "torch": None, "mask_seconds": None,
           "first_call_seconds": None, "baseline_rss_bytes": None, "memory_estimate_bytes": None}
    peer, L, D, H = a.child, a.tokens, a.dim, a.heads
    limit = int(a.memory_limit_gib * GIB)
    try:
        import torch
        import torch.nn.functional as F
        res["torch"] = torch.__version__
        torch.set_num_threads(a.threads)
        comps = parse_spec(a.mask, L)                       # spec errors before anything else
        if len(comps) == 1 and a.edges_file is None:
            res["edges"] = closed_form_edges(comps[0][0], comps[0][1], L)
        has_lookup = a.edges_file is not None or any(k == "explicit" for k, _ in parse_spec(a.mask, L))
        est = memory_estimate(peer, L, D, H, a.flex_mask, has_lookup)
        res["memory_estimate_bytes"] = est
        if est > limit:
            raise OverMemory(f"estimated {est} bytes ({est / GIB:.1f} GiB) for {peer} at L={L}, H={H}, over "
                             f"--memory-limit-gib {a.memory_limit_gib:g}; not run"
                             + (" (create_block_mask materialises the [L, L] mask with int64 temporaries: "
                                "the known ~137 GB failure at 128K tokens; try --flex-mask compiled)"
                                if peer == "flex" and a.flex_mask == "eager" else ""))
        torch.manual_seed(0)
        q = torch.randn(1, H, L, D)
        k = torch.randn(1, H, L, D)
        v = torch.randn(1, H, L, D)
        if a.backward:
            if peer == "flex":
                raise Unsupported("PyTorch's CPU FlexAttention has no backward (a clear error since PR #169646)")
            q.requires_grad_(True)
            k.requires_grad_(True)
            v.requires_grad_(True)
            grad_out = torch.randn(1, H, L, D)
        res["baseline_rss_bytes"] = _rss()

        mask = None
        if peer != "sdpa_dense":
            mask = Mask(a.mask, L, a.edges_file, limit, need_lookup=True)
        elif a.edges_file is not None:                     # the dense peer ignores the mask: count only
            import numpy as np
            e = _load_edges(a.edges_file, L)
            res["edges"] = int(np.unique(e[:, 0] * L + e[:, 1]).size)
        elif not has_lookup and all(k != "random" for k, _ in parse_spec(a.mask, L)):
            mask = Mask(a.mask, L, None, limit, need_lookup=False)
        t0 = time.perf_counter()
        if peer == "sdpa_masked":
            dense = mask.dense()
            count = lambda: int(dense.sum())  # noqa: E731
            fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense)  # noqa: E731
        elif peer == "sdpa_dense":
            causal = a.mask.strip() == "causal"
            count = mask.count_edges if mask is not None else None
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
        else:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            if a.flex_mask == "eager":
                bm = create_block_mask(mask.mask_mod(), B=None, H=None, Q_LEN=L, KV_LEN=L, device="cpu")
            else:
                bm = torch.compile(create_block_mask)(mask.mask_mod(), None, None, L, L, "cpu")
            count = mask.count_edges
            flex = torch.compile(flex_attention, dynamic=False)
            fn = lambda: flex(q, k, v, block_mask=bm)  # noqa: E731
        res["mask_seconds"] = time.perf_counter() - t0
        if a.backward:
            forward = fn

            def fn():  # the backward alone is timed (below); its forward runs first, untimed
                out = forward()
                start = time.perf_counter()
                out.backward(grad_out)
                elapsed = time.perf_counter() - start
                q.grad = k.grad = v.grad = None
                return elapsed

        warmup = max(a.warmup, 1) if peer == "flex" else a.warmup
        for w in range(warmup):
            t0 = time.perf_counter()
            out = fn()
            if w == 0:
                res["first_call_seconds"] = time.perf_counter() - t0
            del out
        runs = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = fn()
            runs.append(out if a.backward else time.perf_counter() - t0)
            del out
        res.update(status="ok", runs=runs, median_seconds=statistics.median(runs), min_seconds=min(runs))
        res["peak_rss_bytes"] = _rss()          # before counting edges, whose temporaries are not the peer's
        if count is not None and res["edges"] is None:
            res["edges"] = count()
    except Unsupported as err:
        res.update(status="unsupported", reason=str(err))
    except OverMemory as err:
        res.update(status="oom", reason=str(err))
    except SpecError as err:
        res.update(status="error", reason=f"bad mask: {err}")
    except Exception as err:  # noqa: BLE001 - a peer failing is a result, not a crash
        msg = f"{type(err).__name__}: {err}".strip()
        if len(msg) > 2000:
            msg = msg[:1000] + " ... " + msg[-1000:]
        res.update(status="oom" if _is_oom(err) else "error", reason=msg)
    if res["peak_rss_bytes"] is None:
        res["peak_rss_bytes"] = _rss()
    return res


# --------------------------------------------------------------------------------------------------
# Driver (parent process): one subprocess per peer
# --------------------------------------------------------------------------------------------------

def child_command(a, peer):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", peer, "--mask", a.mask,
           "--tokens", str(a.tokens), "--dim", str(a.dim), "--heads", str(a.heads),
           "--repeats", str(a.repeats), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--memory-limit-gib", repr(a.memory_limit_gib), "--flex-mask", a.flex_mask]
    if a.edges_file is not None:
        cmd += ["--edges", a.edges_file]
    if a.backward:
        cmd.append("--backward")
    return cmd


def run_in_subprocess(a, peer):
    base = {"peer": peer, "mask": a.mask, "tokens": a.tokens, "dim": a.dim, "heads": a.heads,
            "status": "error", "median_seconds": None, "runs": [], "edges": None, "peak_rss_bytes": None,
            "reason": None, "threads": a.threads}
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(a.threads)
    compiling = " (torch.compile first: 0.5-2 min on 2 cores)" if peer == "flex" and a.flex_mask == "compiled" else ""
    print(f"peer {peer}: {a.mask}, {a.tokens} tokens, d={a.dim}, H={a.heads}{', backward' if a.backward else ''}"
          f"{compiling}...", file=sys.stderr, flush=True)
    # its own session, so that a timeout also ends Inductor's compile workers (and nothing else)
    p = subprocess.Popen(child_command(a, peer), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, text=True, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=a.timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, stderr = p.communicate()
        if stderr:
            sys.stderr.write(stderr)
        base["reason"] = f"timed out after {a.timeout_s:g} s (--timeout-s)"
        return base
    if stderr:
        sys.stderr.write(stderr)
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = " | ".join(stderr.strip().splitlines()[-5:])[-1500:]
    if p.returncode < 0:
        sig = -p.returncode
        base["status"] = "oom" if sig == 9 else "error"
        base["reason"] = (f"killed by signal {sig}" + (" (most likely the kernel's OOM killer)" if sig == 9 else "")
                          + (f": {tail}" if tail else ""))
    else:
        base["reason"] = f"peer process exited with status {p.returncode} without a result: {tail}"
    return base


def self_test():
    """Masks against scripts/numpy_reference.py, closed forms against counts, flex against SDPA."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
    import numpy_reference as ref
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    torch.set_num_threads(2)
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        passed += bool(ok)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}", file=sys.stderr)

    specs = ["full", "causal", "window:0", "window:5", "window:400", "window:7:causal", "window:0:causal",
             "dilated:3:1", "dilated:2:4", "dilated:50:9", "blocked:16:0", "blocked:10:2", "blocked:7:3",
             "blocked:300:1", "global:0", "global:3,1,299,3", "global:0,1,2,3,4,5,6,7,8,9,10",
             "window:4+global:0,1", "causal+dilated:2:3", "blocked:8:1+window:2:causal+global:5"]
    for L in (1, 2, 37, 300):
        for spec in specs:
            try:
                want = ref.parse_mask(spec, L, L)
            except ref.MaskError:
                continue
            m = Mask(spec, L, None, 1 << 40, True)
            got = m.dense().numpy()
            check(np.array_equal(got, want), f"mask {spec} L={L}")
            e = m.count_edges()
            check(e == int(want.sum()), f"edges {spec} L={L}: {e} vs {int(want.sum())}")
    L, D, H = 300, 16, 2
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, H, L, D) for _ in range(3))
    flex = torch.compile(flex_attention, dynamic=False)
    for spec in ("window:20+global:0,1", "blocked:64:1", "dilated:8:1"):
        m = Mask(spec, L, None, 1 << 40, True)
        dense = m.dense()
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        bm = create_block_mask(m.mask_mod(), B=None, H=None, Q_LEN=L, KV_LEN=L, device="cpu")
        got = flex(q, k, v, block_mask=bm)
        rows = dense.any(dim=1)
        err = (got - want)[:, :, rows].abs().max().item()
        check(err < 1e-4, f"flex vs sdpa_masked {spec} L={L}: max abs diff {err:.2e}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask", help="mask specification (see the repository README)")
    ap.add_argument("--tokens", type=int, help="sequence length L (queries = keys)")
    ap.add_argument("--dim", type=int, default=64, help="head dimension D (default 64)")
    ap.add_argument("--heads", type=int, default=1, help="heads H (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2; flex at least 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--memory-limit-gib", type=float, default=16.0,
                    help="report oom instead of running a peer estimated to need more (default 16)")
    ap.add_argument("--edges", dest="edges_file", metavar="E.npy",
                    help="int [E, 2] (query, key) pairs: the mask for sdpa_masked and flex (needed for random)")
    ap.add_argument("--flex-mask", choices=("eager", "compiled"), default="eager",
                    help="create_block_mask as is (eager, default: materialises [L, L]) or under torch.compile")
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="per-peer time limit (default 3600)")
    ap.add_argument("--in-process", action="store_true", help="run the peers in this process (debugging)")
    ap.add_argument("--backward", action="store_true", help="time the backward alone (out.backward(dO)), not the forward")
    ap.add_argument("--self-test", action="store_true", help="check masks, edge counts and flex; then exit")
    ap.add_argument("--child", choices=PEERS, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.self_test:
        return self_test()
    if a.mask is None or a.tokens is None:
        ap.error("--mask and --tokens are required")
    for name in ("tokens", "dim", "heads", "threads"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if a.repeats < 1 or a.warmup < 0 or a.memory_limit_gib <= 0:
        ap.error("--repeats must be >= 1, --warmup >= 0, --memory-limit-gib > 0")
    try:
        parse_spec(a.mask, a.tokens)
    except SpecError as err:
        ap.error(f"bad --mask: {err}")
    if a.edges_file is not None and not os.path.isfile(a.edges_file):
        ap.error(f"--edges {a.edges_file}: no such file")

    if a.child:
        print(json.dumps(run_peer(a)), flush=True)
        return 0
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad or not peers:
        ap.error(f"--peers: unknown {bad} (known: {', '.join(PEERS)})")
    for peer in peers:
        if a.in_process:
            a.child = peer
            res = run_peer(a)
            a.child = None
        else:
            res = run_in_subprocess(a, peer)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
