#!/usr/bin/env python3
"""Check the graph-attention CLI against the independent NumPy float64 reference.

For every mask kind, several unions and many shapes (layouts [L,d] / [H,L,d] / [B,H,L,d], GQA,
d_v != d_k, cross-attention, fp16, custom scale, empty rows, large logits) it writes fresh random
.npy inputs into a temp dir, runs

    BINARY run --query Q.npy --key K.npy --value V.npy --mask SPEC --output O.npy [...]

and compares O.npy with scripts/numpy_reference.py using, per row i,
    err_i = max_c |o_ic - r_ic| / max(max_c sum_j p_ij |v_jc|, 1e-300)
(max over rows and heads; tolerance 1e-5; empty rows must be exact zeros, or NaN with
--empty-rows nan). random:P:SEED graphs come from `BINARY inspect --mask SPEC --tokens L
--edges-out E.npy` (their generator belongs to the Swift side); if that is unsupported those
cases print SKIPPED. Bad inputs must exit non-zero with a message on stderr and leave a
pre-existing O.npy byte-identical.

Run:
    python3 scripts/check_cli_against_numpy.py --binary .build/release/graph-attention
    python3 scripts/check_cli_against_numpy.py --binary PATH --quick          # subset, < 30 s
    options: --keep DIR (keep the case files), --seed N (reproduce), --timeout S (per case)
Last line: "N passed, M failed"; exit status 1 if anything failed.
"""
import argparse
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from numpy_reference import attention, parse_mask  # noqa: E402

TOL = 1e-5
# Inputs x30 give logits of several hundred, where rounding the fp32 score alone (ulp(300) = 3e-5) moves the
# softmax weights by more than 1e-5: NumPy's own float32 attention misses float64 by ~3e-5 there. Those cases
# check that the online softmax does not overflow, at this looser bound, or at two fp32 ulps of the case's
# largest logit when that is larger (d = 128 cases reach logits above 1000).
TOL_LARGE_LOGITS = 1e-4
NOTES = []  # lines printed under the current case line


class Skip(Exception):
    pass


class Fail(Exception):
    pass


# ------------------------------------------------------------------------- explicit graph files

def _rand_edges(rng, lq, lk, per_row, empty_tail, empty_mid=True):
    """Edge list with duplicates; the last `empty_tail` rows (and one middle row) are empty."""
    edges = []
    for r in range(lq - empty_tail):
        if empty_mid and r == lq // 3:
            continue
        n = int(rng.integers(1, per_row + 1))
        cols = rng.integers(0, lk, size=n)
        edges += [(r, int(c)) for c in cols]
        if n > 1:
            edges.append((r, int(cols[0])))  # duplicate
    return edges


def csr_files(d, rng, lq, lk, per_row=6, tail=4, ip_dtype=np.int32, ix_dtype=np.int64):
    edges = _rand_edges(rng, lq, lk, per_row, tail)
    rows = [[] for _ in range(lq)]
    for r, c in edges:
        rows[r].append(c)
    for r in rows:
        rng.shuffle(r)  # any order within a row
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(ip_dtype)
    indices = np.array([c for r in rows for c in r], dtype=ix_dtype)
    np.save(os.path.join(d, "indptr.npy"), indptr)
    np.save(os.path.join(d, "indices.npy"), indices)
    return f"csr:{os.path.join(d, 'indptr.npy')}:{os.path.join(d, 'indices.npy')}"


def coo_files(d, rng, lq, lk, per_row=5, tail=3):
    edges = _rand_edges(rng, lq, lk, per_row, tail)
    edges += edges[: len(edges) // 4]  # more duplicates
    order = rng.permutation(len(edges))
    e = np.array(edges)[order]
    np.save(os.path.join(d, "rows.npy"), e[:, 0].astype(np.int32))
    np.save(os.path.join(d, "cols.npy"), e[:, 1].astype(np.int16))
    return f"coo:{os.path.join(d, 'rows.npy')}:{os.path.join(d, 'cols.npy')}"


def mtx_file(d, rng, lq, lk, field="pattern", symmetric=False, tail=3):
    if symmetric:
        edges = [(r, c) for r, c in _rand_edges(rng, lq - tail, lq - tail, 4, 0) if r >= c]
        edges += [(5, 5), (lq - tail - 1, 0)]
    else:
        edges = sorted(set(_rand_edges(rng, lq, lk, 5, tail)))
    rng.shuffle(edges)
    p = os.path.join(d, "graph.mtx")
    with open(p, "w") as f:
        f.write(f"%%MatrixMarket matrix coordinate {field} {'symmetric' if symmetric else 'general'}\n")
        f.write("% written by check_cli_against_numpy.py\n")
        f.write(f"{lq} {lk} {len(edges)}\n")
        for r, c in edges:
            val = "" if field == "pattern" else (f" {rng.integers(1, 9)}" if field == "integer"
                                                 else f" {rng.standard_normal():.6g}")
            f.write(f"{r + 1} {c + 1}{val}\n")
    return f"mtx:{p}"


# -------------------------------------------------------------------------------------- cases

def C(name, q, k=None, v=None, mask="full", quick=False, dtype="<f4", scale=None, nan=False,
      json_=False, x30=False, randoms=()):
    """q, k, v: shapes (k defaults to q, v to k). mask: str (may use {L}) or fn(dir, rng, Lq, Lk)."""
    k = k or q
    v = v or k
    return dict(name=name, q=q, k=k, v=v, mask=mask, quick=quick, dtype=dtype, scale=scale,
                nan=nan, json=json_, x30=x30, randoms=randoms)


CASES = [
    C("one_token_causal", (1, 8), mask="causal", quick=True),
    C("one_token_window_4d", (1, 2, 1, 3), mask="window:5", quick=True),
    C("one_token_blocked_nan", (2, 1, 16), mask="blocked:4:1", nan=True),
    C("full_2d_d64", (37, 64), quick=True),
    C("causal_3d_d128", (2, 130, 128), mask="causal"),
    C("causal_4d_d128_L512", (2, 2, 512, 128), mask="causal"),
    C("window_W_eq_L", (3, 50, 16), mask="window:50", quick=True),
    C("window_W_gt_L", (2, 1, 40, 8), mask="window:200"),
    C("window_W_eq_Lminus1", (33, 8), mask="window:32"),
    C("window_4_d1", (2, 2, 64, 1), mask="window:4", quick=True),
    C("window_causal_d3", (90, 3), mask="window:16:causal"),
    C("window_causal_W_gt_L", (2, 30, 8), mask="window:100:causal"),
    C("dilated_small", (64, 8), mask="dilated:3:1", quick=True),
    C("dilated_long_160", (2, 600, 64), mask="dilated:40:3"),
    C("dilated_long_300_d96", (1, 2, 500, 96), mask="dilated:100:2"),
    C("dilated_D0", (70, 16), mask="dilated:9:0"),
    C("blocked_16_1_nondividing", (2, 100, 32), mask="blocked:16:1", quick=True),
    C("blocked_7_2_d3", (50, 3), mask="blocked:7:2"),
    C("blocked_D_ge_B", (40, 8), mask="blocked:5:9"),
    C("blocked_64_0", (2, 1, 200, 64), mask="blocked:64:0"),
    C("blocked_B_gt_L", (20, 8), mask="blocked:32:2"),
    C("global_ends", (2, 64, 32), mask="global:0,{Lm1}", quick=True),
    C("global_mid_plus_causal", (80, 16), mask="global:0,41,{Lm1}+causal"),
    C("csr_empty_tail", (2, 90, 32), mask=lambda d, r, a, b: csr_files(d, r, a, b), quick=True),
    C("csr_int64_uint16", (40, 8), mask=lambda d, r, a, b: csr_files(d, r, a, b, ip_dtype=np.int64,
                                                                         ix_dtype=np.uint16)),
    C("csr_cross_Lq40_Lk70", (2, 40, 64), (2, 70, 64), (2, 70, 48),
      mask=lambda d, r, a, b: csr_files(d, r, a, b), quick=True),
    C("coo_shuffled_dups", (3, 80, 16), mask=lambda d, r, a, b: coo_files(d, r, a, b), quick=True),
    C("coo_cross_gqa", (4, 25, 8), (2, 60, 8), (2, 60, 5), mask=lambda d, r, a, b: coo_files(d, r, a, b)),
    C("mtx_general_pattern", (60, 32), mask=lambda d, r, a, b: mtx_file(d, r, a, b)),
    C("mtx_symmetric_real", (2, 50, 16), mask=lambda d, r, a, b: mtx_file(d, r, a, b, "real", True),
      quick=True),
    C("mtx_cross_integer", (30, 8), (45, 8), mask=lambda d, r, a, b: mtx_file(d, r, a, b, "integer")),
    C("union_window4_window6", (2, 2, 77, 64), mask="window:4+window:6", quick=True),
    C("union_window_global_random", (2, 128, 32), mask="window:8+global:0,{Lm1}+random:0.05:7",
      randoms=("random:0.05:7",)),
    C("union_dilated_window", (2, 200, 16), mask="dilated:5:1+window:3"),
    C("union_blocked_causal", (100, 64), mask="blocked:16:1+causal"),
    C("union_csr_window", (2, 60, 16), mask=lambda d, r, a, b: csr_files(d, r, a, b) + "+window:2"),
    C("gqa_4_2_causal", (2, 4, 96, 64), (2, 2, 96, 64), mask="causal", quick=True),
    C("gqa_4_1_window", (4, 128, 96), (1, 128, 96), mask="window:16"),
    C("dv96_ne_dk64", (2, 70, 64), (2, 70, 64), (2, 70, 96), mask="window:10+global:3"),
    C("dv17_ne_dk3", (2, 2, 45, 3), (2, 2, 45, 3), (2, 2, 45, 17), mask="causal"),
    C("cross_full", (2, 3, 30, 64), (2, 3, 77, 64), (2, 3, 77, 32), quick=True),
    C("fp16_causal", (2, 2, 100, 64), mask="causal", dtype="<f2", quick=True),
    C("fp16_gqa_union", (2, 4, 64, 32), (2, 1, 64, 32), mask="window:4+global:0", dtype="<f2"),
    C("scale_0.05", (2, 64, 64), mask="causal", scale=0.05),
    C("scale_1.7", (1, 2, 48, 16), mask="window:6", scale=1.7, quick=True),
    C("empty_rows_nan_blocked_8_1", (2, 2, 50, 16), mask="blocked:8:1", nan=True, quick=True),
    C("empty_rows_zero_blocked_8_1", (2, 50, 16), mask="blocked:8:1"),
    C("empty_rows_nan_csr", (2, 40, 8), mask=lambda d, r, a, b: csr_files(d, r, a, b), nan=True),
    C("large_logits_x30", (2, 128, 64), mask="window:16+global:0", x30=True, quick=True),
    C("large_logits_x30_full", (1, 2, 96, 128), x30=True),
    C("random_0.1", (2, 150, 32), mask="random:0.1:42", randoms=("random:0.1:42",), quick=True),
    C("random_0.3_2d", (60, 8), mask="random:0.3:1", randoms=("random:0.3:1",)),
    C("random_P1", (20, 8), mask="random:1:3", randoms=("random:1:3",)),
    C("random_P0_all_empty", (20, 8), mask="random:0:3", randoms=("random:0:3",)),
    C("json_output", (2, 3, 64, 32), mask="window:4+global:0", json_=True, quick=True),
]

# graph-only checks (need inspect --edges-out): the CLI's edge set must equal the reference mask
INSPECT = [
    ("causal", 40, True), ("window:5", 50, False), ("window:7:causal", 33, False),
    ("dilated:5:1+window:3", 60, False), ("dilated:40:3", 300, False), ("blocked:16:1+causal", 100, True),
    ("blocked:8:1", 50, False), ("global:0,{Lm1}", 64, False), ("window:4+window:6", 77, False),
    ("window:8+global:0,{Lm1}+random:0.05:7", 128, True),
]

# bad inputs: (name, builder(dir) -> argv pieces, stderr keywords, quick)
BAD = ["csr_index_out_of_range", "mismatched_dk", "unknown_mask_kind", "nan_in_q",
       "window_with_Lq_ne_Lk", "hkv_not_dividing_hq", "global_token_ge_L", "integer_input"]


# ---------------------------------------------------------------------------------- machinery

def shape_str(c):
    s = "x".join(map(str, c["q"]))
    if c["k"] != c["q"]:
        s += " k" + "x".join(map(str, c["k"]))
    if c["v"] != c["k"]:
        s += " v" + "x".join(map(str, c["v"]))
    return s + (" f16" if c["dtype"] == "<f2" else "")


def expand(spec, L):
    return spec.replace("{Lm1}", str(L - 1))


class Runner:
    def __init__(self, binary, root, seed, timeout):
        self.binary, self.root, self.seed, self.timeout = binary, root, seed, timeout
        self._inspect_ok = None

    def run(self, args, cwd=None):
        try:
            return subprocess.run([self.binary] + args, capture_output=True, text=True,
                                  timeout=self.timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise Fail(f"timed out after {self.timeout}s: {' '.join(args[:1])}") from None

    def inspect_supported(self):
        if self._inspect_ok is None:
            p = os.path.join(self.root, "probe_edges.npy")
            try:
                r = self.run(["inspect", "--mask", "window:1", "--tokens", "4", "--edges-out", p])
                self._inspect_ok = r.returncode == 0 and os.path.exists(p)
            except Fail:
                self._inspect_ok = False
        return self._inspect_ok

    def edges(self, spec, L, d):
        """Edges [E, 2] of `spec` at L tokens, from the CLI."""
        if not self.inspect_supported():
            raise Skip("SKIPPED (needs inspect --edges-out)")
        p = os.path.join(d, f"edges_{zlib.crc32(spec.encode()):08x}.npy")
        r = self.run(["inspect", "--mask", spec, "--tokens", str(L), "--edges-out", p])
        if r.returncode != 0 or not os.path.exists(p):
            raise Fail(f"inspect {spec!r} failed rc={r.returncode}: {tail(r.stderr)}")
        e = np.load(p, allow_pickle=False)
        if e.dtype != np.int64:
            NOTES.append(f"    note: inspect --edges-out wrote dtype {e.dtype}, expected int64")
        if e.ndim != 2 or (e.shape[1] != 2) or e.dtype.kind not in "iu":
            raise Fail(f"inspect {spec!r}: edges must be integer [E, 2], got {e.dtype} {e.shape}")
        if e.size and (e.min() < 0 or e.max() >= L):
            raise Fail(f"inspect {spec!r}: edge index outside [0, {L})")
        if len(np.unique(e, axis=0)) != len(e):
            raise Fail(f"inspect {spec!r}: {len(e) - len(np.unique(e, axis=0))} duplicate edges")
        return e

    def random_edges(self, op, L, d):
        e = self.edges(op, L, d)
        p = float(op.split(":")[1])
        mean, sd = p * L * L, math.sqrt(L * L * p * (1 - p))
        if abs(len(e) - mean) > 5 * sd + 1e-9:
            raise Fail(f"{op} at L={L}: {len(e)} edges, expected {mean:.1f} +- 5*{sd:.1f}")
        return e


def tail(s, n=300):
    s = (s or "").strip().replace("\n", " | ")
    return s if len(s) <= n else "..." + s[-n:]


def compare(o, r, mag, mask, nan_mode):
    """Max relative error over non-empty rows; raises Fail on empty-row / NaN problems."""
    if o.shape != r.shape:
        raise Fail(f"output shape {o.shape} != expected {r.shape}")
    o = o.astype(np.float64)
    empty = ~mask.any(axis=1)
    oe = o[..., empty, :]
    if nan_mode:
        if not np.all(np.isnan(oe)):
            raise Fail(f"empty rows must be NaN with --empty-rows nan ({int((~np.isnan(oe)).sum())} values are not)")
    elif not np.all(oe == 0):
        raise Fail(f"empty rows must be exact zeros ({int((oe != 0).sum())} values are not, "
                   f"{int(np.isnan(oe).sum())} NaN)")
    on, rn, mn = o[..., ~empty, :], r[..., ~empty, :], mag[..., ~empty, :]
    if on.size == 0:
        return 0.0
    if not np.all(np.isfinite(on)):
        raise Fail(f"{int((~np.isfinite(on)).sum())} NaN/inf values in non-empty rows")
    err = np.abs(on - rn).max(axis=-1) / np.maximum(mn.max(axis=-1), 1e-300)
    return float(err.max())


def run_case(R, idx, c, d):
    rng = np.random.default_rng([R.seed, idx])
    Lq, Lk = c["q"][-2], c["k"][-2]
    mul = 30.0 if c["x30"] else 1.0
    q, k, v = ((mul * rng.standard_normal(s)).astype(c["dtype"]) for s in (c["q"], c["k"], c["v"]))
    P = lambda s: os.path.join(d, s)  # noqa: E731
    for a, n in ((q, "Q.npy"), (k, "K.npy"), (v, "V.npy")):
        np.save(P(n), a)
    spec = c["mask"](d, rng, Lq, Lk) if callable(c["mask"]) else expand(c["mask"], Lq)
    shown = spec.replace(d + os.sep, "")
    rnd = {op: R.random_edges(op, Lq, d) for op in c["randoms"]}
    mask = parse_mask(spec, Lq, Lk, random_edges=rnd)
    args = ["run", "--query", P("Q.npy"), "--key", P("K.npy"), "--value", P("V.npy"),
            "--mask", spec, "--output", P("O.npy")]
    if c["scale"] is not None:
        args += ["--scale", repr(c["scale"])]
    if c["nan"]:
        args += ["--empty-rows", "nan"]
    if c["json"]:
        args += ["--json"]
    r = R.run(args)
    if r.returncode != 0:
        how = f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        raise Fail(f"{how}: {tail(r.stderr)}")
    if not os.path.exists(P("O.npy")):
        raise Fail("exit 0 but no O.npy written")
    o = np.load(P("O.npy"), allow_pickle=False)
    if o.dtype != np.float32:
        NOTES.append(f"    note: output dtype {o.dtype}, expected float32")
    ref, mag = attention(q, k, v, mask, scale=c["scale"], empty_rows="nan" if c["nan"] else "zero")
    err = compare(o, ref, mag, mask, c["nan"])
    if c["x30"]:
        # The fp32 score carries rounding of about eps32 * |s|: allow two such ulps of the largest logit.
        qd, kd = q.astype(np.float64), k.astype(np.float64)
        if qd.shape[-3:-2] != kd.shape[-3:-2]:
            kd = np.repeat(kd, qd.shape[-3] // kd.shape[-3], axis=-3)
        scale = c["scale"] if c["scale"] is not None else 1 / np.sqrt(q.shape[-1])
        logits = np.abs(qd @ np.swapaxes(kd, -1, -2)) * scale
        c["tol"] = max(TOL_LARGE_LOGITS, 2 * 2.0 ** -23 * float(np.where(mask, logits, 0).max()))
    extra = ""
    if c["json"]:
        try:
            js = json.loads(r.stdout)
        except ValueError:
            raise Fail(f"--json stdout is not one JSON object: {tail(r.stdout)}") from None
        if not isinstance(js, dict):
            raise Fail(f"--json stdout is not a JSON object: {tail(r.stdout)}")
        miss = [key for key in ("edges", "seconds", "gflops") if key not in js]
        if miss:
            raise Fail(f"--json output lacks {miss}: {tail(r.stdout)}")
        nnz = int(mask.sum())
        bh = int(np.prod(c["q"][:-2]))
        if js["edges"] == nnz:
            extra = f" edges={nnz} ok"
        elif js["edges"] == nnz * bh:
            NOTES.append(f"    WARNING: json edges={js['edges']} = nnz*batch*heads ({nnz}*{bh}); "
                  f"expected edges of one head = {nnz}")
        else:
            NOTES.append(f"    WARNING: json edges={js['edges']} matches neither nnz={nnz} nor nnz*B*H={nnz * bh}")
    return shown, err, extra


def run_inspect_case(R, spec, L, d):
    spec = expand(spec, L)
    randoms = [op for op in spec.split("+") if op.startswith("random:")]
    rnd = {op: R.random_edges(op, L, d) for op in randoms}
    want = parse_mask(spec, L, L, random_edges=rnd)
    e = R.edges(spec, L, d)
    got = np.zeros((L, L), bool)
    got[e[:, 0], e[:, 1]] = True
    if not np.array_equal(got, want):
        miss, extra = np.argwhere(want & ~got), np.argwhere(got & ~want)
        raise Fail(f"edge sets differ: {len(miss)} missing (e.g. {miss[:3].tolist()}), "
                   f"{len(extra)} extra (e.g. {extra[:3].tolist()})")
    return int(want.sum())


def run_bad(R, name, d, rng):
    P = lambda s: os.path.join(d, s)  # noqa: E731
    L, dk = 24, 8
    q, k, v = (rng.standard_normal((2, L, dk)).astype(np.float32) for _ in range(3))
    mask = "causal"
    kw = []
    if name == "csr_index_out_of_range":
        np.save(P("ip.npy"), np.array([0] + [2] * (L - 1) + [3], np.int64))
        np.save(P("ix.npy"), np.array([0, 5, L], np.int64))  # L is out of range
        mask, kw = f"csr:{P('ip.npy')}:{P('ix.npy')}", ["index", "range", "bound", "column", str(L)]
    elif name == "mismatched_dk":
        k = rng.standard_normal((2, L, dk + 1)).astype(np.float32)
        kw = ["shape", "dim", "match", "differ"]
    elif name == "unknown_mask_kind":
        mask, kw = "banana:3", ["mask", "unknown", "kind", "banana"]
    elif name == "nan_in_q":
        q[1, 3, 2] = np.nan
        kw = ["nan", "finite", "value"]
    elif name == "window_with_Lq_ne_Lk":
        k = rng.standard_normal((2, L + 5, dk)).astype(np.float32)
        v = rng.standard_normal((2, L + 5, dk)).astype(np.float32)
        mask, kw = "window:3", ["shape", "mask", "length", "lq", "lk", "cross", "square", "token"]
    elif name == "hkv_not_dividing_hq":
        q = rng.standard_normal((4, L, dk)).astype(np.float32)
        k, v = (rng.standard_normal((3, L, dk)).astype(np.float32) for _ in range(2))
        kw = ["head", "divid", "multiple", "shape"]
    elif name == "global_token_ge_L":
        mask, kw = f"global:0,{L}", ["global", "token", "range", "mask", str(L)]
    elif name == "integer_input":
        q = (q * 10).astype(np.int32)
        kw = ["dtype", "int", "float"]
    for a, n in ((q, "Q.npy"), (k, "K.npy"), (v, "V.npy")):
        np.save(P(n), a)
    sentinel = b"DO-NOT-TOUCH\x00" + rng.bytes(51)
    with open(P("O.npy"), "wb") as f:
        f.write(sentinel)
    r = R.run(["run", "--query", P("Q.npy"), "--key", P("K.npy"), "--value", P("V.npy"),
               "--mask", mask, "--output", P("O.npy")])
    with open(P("O.npy"), "rb") as f:
        same = f.read() == sentinel
    leftovers = sorted(set(os.listdir(d)) - {"Q.npy", "K.npy", "V.npy", "O.npy", "ip.npy", "ix.npy"})
    msg = tail(r.stderr, 160)
    if r.returncode == 0:
        raise Fail("exit 0 on bad input")
    if r.returncode < 0:
        raise Fail(f"killed by signal {-r.returncode} (crash/trap instead of an error): {msg}")
    if not r.stderr.strip():
        raise Fail(f"exit {r.returncode} but stderr is empty")
    if not same:
        raise Fail("O.npy was modified")
    if not any(w.lower() in r.stderr.lower() for w in kw):
        raise Fail(f"stderr mentions none of {kw}: {msg}")
    if leftovers:
        NOTES.append(f"    note: files left in the output dir: {leftovers}")
    return f"{mask.replace(d + os.sep, '')} -> exit {r.returncode}", msg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="path to the graph-attention executable")
    ap.add_argument("--quick", action="store_true", help="run a subset (< 30 s)")
    ap.add_argument("--keep", metavar="DIR", help="write case files under DIR and keep them")
    ap.add_argument("--seed", type=int, help="base seed (default: random, printed)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per CLI call (default 120)")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"error: --binary {a.binary!r} is not an executable file", file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else secrets.randbits(31)
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        root = os.path.abspath(a.keep)
    else:
        root = tempfile.mkdtemp(prefix="ga_check_")
    if ":" in root or "+" in root:
        print(f"error: work dir {root!r} contains ':' or '+', which mask specs cannot carry", file=sys.stderr)
        return 2
    print(f"binary: {binary}\nseed: {seed}  (rerun with --seed {seed}; case i uses "
          f"np.random.default_rng([{seed}, i]))\nwork dir: {root}\ntolerance: {TOL:g}")
    R = Runner(binary, root, seed, a.timeout)
    passed = failed = skipped = 0

    def report(status, name, shape, mask, err):
        nonlocal passed, failed, skipped
        if status == "PASS":
            passed += 1
        elif status == "FAIL":
            failed += 1
        else:
            skipped += 1
        print(f"{name:<34} {shape:<26} {mask:<44} {err:<22} {status}", flush=True)

    def attempt(name, shape, mask, fn):
        NOTES.clear()
        try:
            mask, err = fn()
            report("PASS" if err is None or err <= c.get("tol", TOL) else "FAIL", name, shape, mask,
                   "-" if err is None else f"max_err={err:.3e}")
        except Skip as e:
            report(str(e), name, shape, mask, "-")
        except Fail as e:
            report("FAIL", name, shape, mask, "-")
            NOTES.append(f"    {e}")
        except Exception as e:  # noqa: BLE001 - harness/reference problem: report, keep going
            report("FAIL", name, shape, mask, "-")
            NOTES.append(f"    harness error: {type(e).__name__}: {e}")
        for line in NOTES:
            print(line)

    for idx, c in enumerate(CASES):
        if a.quick and not c["quick"]:
            continue
        d = os.path.join(root, f"{idx:02d}_{c['name']}")
        os.makedirs(d, exist_ok=True)
        label = c["mask"] if isinstance(c["mask"], str) else "(explicit file)"
        label = expand(label, c["q"][-2])
        flags = (f" --scale {c['scale']}" if c["scale"] is not None else "") + \
                (" --empty-rows nan" if c["nan"] else "") + (" --json" if c["json"] else "")

        def fn(c=c, idx=idx, d=d, flags=flags):
            shown, err, extra = run_case(R, idx, c, d)
            return shown + flags + extra, err
        attempt(c["name"], shape_str(c), label + flags, fn)

    for n, (spec, L, quick) in enumerate(INSPECT):
        if a.quick and not quick:
            continue
        d = os.path.join(root, f"inspect_{n:02d}")
        os.makedirs(d, exist_ok=True)

        def fn(spec=spec, L=L, d=d):
            nnz = run_inspect_case(R, spec, L, d)
            return f"{expand(spec, L)} (nnz {nnz})", None
        attempt(f"inspect_edges_{n:02d}", f"L={L}", expand(spec, L), fn)

    for n, name in enumerate(BAD):
        d = os.path.join(root, f"bad_{n:02d}_{name}")
        os.makedirs(d, exist_ok=True)

        def fn(name=name, d=d, n=n):
            shown, msg = run_bad(R, name, d, np.random.default_rng([seed, 1000 + n]))
            NOTES.append(f"    stderr: {msg}")
            return shown, None
        attempt(f"bad_{name}", "-", "-", fn)

    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    if skipped:
        print(f"{skipped} skipped")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
