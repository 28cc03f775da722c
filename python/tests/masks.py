"""The mask specifications every test runs over, and explicit graph files for them."""
import numpy as np

L = 97  # odd, not a multiple of any block or tile size

SELF_MASKS = [
    "full", "causal", "window:5", "window:5:causal", "window:500", "dilated:3:2", "blocked:16:0", "blocked:16:1",
    "global:0,7,96", "random:0.1:3",
    # unions
    "window:3+global:0+random:0.05:1", "dilated:2:1+window:1", "blocked:8:0+causal", "window:0+window:0",
]


def write_explicit_graphs(directory, query_count, key_count, seed=5):
    """csr, coo and mtx files of one random graph with empty rows and duplicate edges; returns their specs."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for i in range(query_count):
        if i % 5 == 1:
            continue  # an empty row every five
        picked = rng.choice(key_count, size=min(key_count, 1 + i % 7), replace=False)
        rows += [i] * len(picked)
        cols += sorted(int(c) for c in picked)
    rows, cols = np.array(rows, np.int64), np.array(cols, np.int64)
    indptr = np.zeros(query_count + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    np.save(directory / "indptr.npy", np.cumsum(indptr))
    np.save(directory / "indices.npy", cols)
    np.save(directory / "rows.npy", np.concatenate([rows, rows[:3]]))  # duplicates collapse
    np.save(directory / "cols.npy", np.concatenate([cols, cols[:3]]))
    with open(directory / "graph.mtx", "w") as f:
        f.write(f"%%MatrixMarket matrix coordinate pattern general\n{query_count} {key_count} {len(rows)}\n")
        f.writelines(f"{r + 1} {c + 1}\n" for r, c in zip(rows, cols))
    return ["csr:indptr.npy:indices.npy", "coo:rows.npy:cols.npy", "mtx:graph.mtx"]


def aligned_causal(query_count, key_count, window=None):
    """Dense bool [L_q, L_k] of `causal` (or `window:W:causal`) aligned bottom-right, as the engine defines them
    for `L_q != L_k` (query i sits at key position i + L_k - L_q), written out independently of the engine."""
    i = np.arange(query_count)[:, None] + (key_count - query_count)
    j = np.arange(key_count)[None, :]
    mask = j <= i
    return mask if window is None else mask & (i - j <= window)
