"""Checks sampled rows of a (possibly huge) graph-attention output against float64 NumPy, reading the
.npy files through memory maps, for window masks: `python3 scripts/check_sampled_rows.py DIR W [N]`
with DIR holding q.npy, k.npy, v.npy, o.npy of shape [H, L, d] and the mask window:W. Prints the
largest relative error (max |o - r| / max_c sum_j p_j |v_jc|) over N rows (default 16) per head."""
import sys
import numpy as np

directory, window = sys.argv[1], int(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 16
q, k, v, o = (np.load(f"{directory}/{n}.npy", mmap_mode="r") for n in "qkvo")
heads, length, dim = q.shape
worst = 0.0
rows = sorted({0, 1, length - 1, length - 2} | {int(i) for i in np.linspace(0, length - 1, count)})
for h in range(heads):
    for i in rows:
        lo, hi = max(0, i - window), min(length - 1, i + window)
        s = (k[h, lo:hi + 1].astype(np.float64) @ q[h, i].astype(np.float64)) / np.sqrt(dim)
        p = np.exp(s - s.max())
        p /= p.sum()
        vv = v[h, lo:hi + 1].astype(np.float64)
        ref = p @ vv
        magnitude = (p @ np.abs(vv)).max()
        worst = max(worst, float(np.abs(o[h, i].astype(np.float64) - ref).max() / magnitude))
print(f"{len(rows) * heads} rows of {length} tokens: max relative error {worst:.3e} vs float64 "
      f"({'PASS' if worst <= (1e-5 if o.dtype == np.float32 else 1e-3) else 'FAIL'} for {o.dtype} output)")
