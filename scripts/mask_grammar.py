"""The mask grammar of the independent references, parsed in plain Python (no NumPy, no torch).

One parser for the NumPy float64 reference (scripts/numpy_reference.py) and the PyTorch peers of
`graph-attention bench` (Benchmarks/peers/torch_peers.py), so the two read a specification the same way.
It is deliberately not the engine's parser: the references must not share code with what they check.

    from mask_grammar import operands, parse_operand, clamped
    for op in operands("window:8+global:0"):
        kind, params = clamped(*parse_operand(op), L=1024)   # ("window", (8,)), then ("global", (0,))

Kinds: full, causal, window:W (kind "window"), window:W:causal ("window_causal"), dilated:W:D, blocked:B:D,
global:I,J,... (sorted, unique), random:P:SEED, csr:INDPTR.npy:INDICES.npy, coo:ROWS.npy:COLS.npy,
mtx:FILE.mtx, joined with '+' (a union). File paths may not contain '+'.
"""

__all__ = ["MaskError", "integer", "operands", "parse_operand", "clamped", "STRUCTURED", "KNOWN"]

#: Kinds whose edges follow from positions (square masks only).
STRUCTURED = ("causal", "window", "window_causal", "dilated", "blocked", "global", "random")
#: The kinds as written in a specification, for error messages.
KNOWN = "full, causal, window, dilated, blocked, global, random, csr, coo, mtx"


class MaskError(ValueError):
    """Bad mask specification or mask file."""


def integer(text, what, lo=0):
    """`text` as a base-10 integer >= `lo`, or a MaskError naming `what`."""
    try:
        val = int(text, 10)
    except (TypeError, ValueError):
        raise MaskError(f"{what} must be an integer, got {text!r}") from None
    if val < lo:
        raise MaskError(f"{what} must be >= {lo}, got {val}")
    return val


def operands(spec):
    """The '+'-joined operands of `spec`, stripped; a MaskError for an empty spec or operand."""
    if not isinstance(spec, str) or not spec.strip():
        raise MaskError("mask spec is empty")
    ops = [op.strip() for op in spec.split("+")]
    if any(not op for op in ops):
        raise MaskError(f"empty operand in mask spec {spec!r}")
    return ops


def parse_operand(op):
    """(kind, params) of one operand, integers as written (see `clamped`).

    params: () for full and causal; (W,) for window and window_causal; (W, D) for dilated; (B, D) for
    blocked; sorted unique tokens for global; (P, SEED) for random; (A, B) file paths for csr and coo;
    (FILE,) for mtx. Complexity: O(len(op)).
    """
    kind, _, rest = op.partition(":")
    parts = rest.split(":") if rest else []
    if kind in ("full", "causal"):
        if parts:
            raise MaskError(f"'{kind}' takes no parameters, got {op!r}")
        return kind, ()
    if kind == "window":
        if len(parts) == 1:
            return "window", (integer(parts[0], "window W"),)
        if len(parts) == 2 and parts[1] == "causal":
            return "window_causal", (integer(parts[0], "window W"),)
        raise MaskError(f"window spec must be window:W or window:W:causal, got {op!r}")
    if kind == "dilated":
        if len(parts) != 2:
            raise MaskError(f"dilated spec must be dilated:W:D, got {op!r}")
        return "dilated", (integer(parts[0], "dilated W"), integer(parts[1], "dilated D"))
    if kind == "blocked":
        if len(parts) != 2:
            raise MaskError(f"blocked spec must be blocked:B:D, got {op!r}")
        return "blocked", (integer(parts[0], "blocked B", 1), integer(parts[1], "blocked D"))
    if kind == "global":
        if len(parts) != 1 or not parts[0]:
            raise MaskError(f"global spec must be global:I,J,..., got {op!r}")
        return "global", tuple(sorted({integer(t.strip(), "global token") for t in parts[0].split(",")}))
    if kind == "random":
        if len(parts) != 2:
            raise MaskError(f"random spec must be random:P:SEED, got {op!r}")
        try:
            p = float(parts[0])
        except ValueError:
            raise MaskError(f"random P must be a number, got {parts[0]!r}") from None
        if not 0.0 <= p <= 1.0:
            raise MaskError(f"random P must be in [0, 1], got {p}")
        return "random", (p, integer(parts[1], "random SEED"))
    if kind in ("csr", "coo"):
        if len(parts) != 2:
            raise MaskError(f"{kind} needs two files: {kind}:A.npy:B.npy, got {op!r}")
        return kind, (parts[0], parts[1])
    if kind == "mtx":
        if not rest:
            raise MaskError("mtx needs a file: mtx:FILE.mtx")
        return "mtx", (rest,)
    raise MaskError(f"unknown mask kind {kind!r} in {op!r} (known: {KNOWN})")


def clamped(kind, params, L):
    """`params` of a structured kind for L tokens: window, dilated and blocked parameters clamped to L (which
    changes no edge and keeps index arithmetic in int64); global tokens checked to be below L."""
    if kind in ("window", "window_causal"):
        return kind, (min(params[0], L),)
    if kind in ("dilated", "blocked"):
        return kind, (min(params[0], L), min(params[1], L))
    if kind == "global" and params[-1] >= L:
        raise MaskError(f"global token {params[-1]} out of range, must be < L = {L}")
    return kind, params
