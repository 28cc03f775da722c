#!/usr/bin/env bash
# Sets up the PyTorch peers for `graph-attention bench`: a virtual environment at
# Benchmarks/peers/.venv with a pinned torch and numpy. Idempotent: a second run only checks.
#
#   bash Benchmarks/peers/setup.sh            # install (or check) and smoke-test
#   TORCH_SOURCE=pypi bash .../setup.sh       # skip the local CPU-only wheel, take PyPI's (CUDA) build
#
# Where torch comes from (TORCH_SOURCE=auto, the default):
#   1. a CPU-only wheel torch==$TORCH_VERSION+cpu already on this machine, found through pip's
#      find-links (pip.conf / PIP_FIND_LINKS, e.g. /opt/wheels) or TORCH_WHEEL=/path/to/torch-...whl:
#      about 190 MB, no network for torch itself;
#   2. otherwise PyPI's torch==$TORCH_VERSION. On Linux that wheel is linked against CUDA: even its
#      CPU library (libtorch_cpu.so) needs libcudart and libcupti, so it does not import without the
#      nvidia-* / cuda-* wheels it depends on (`pip install --no-deps` fails on `import torch`).
#      About 2.6 GB to download and 4.7 GB installed. No GPU is needed or used.
# The CPU code paths (SDPA, FlexAttention via torch.compile/Inductor) are the same in both builds.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
TORCH_SOURCE="${TORCH_SOURCE:-auto}"          # auto | local | pypi

say() { printf 'setup.sh: %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

case "$TORCH_SOURCE" in auto|local|pypi) ;; *) die "TORCH_SOURCE must be auto, local or pypi (got '$TORCH_SOURCE')";; esac

# A Python >= 3.10 to build the venv from.
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || die "no python3 found; install Python 3.10+ or set PYTHON=/path/to/python3"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$PY is $("$PY" -V 2>&1); torch $TORCH_VERSION needs Python 3.10 or later (set PYTHON=...)"

if ! command -v g++ >/dev/null 2>&1 && ! command -v c++ >/dev/null 2>&1; then
  say "warning: no C++ compiler (g++/c++) on PATH: the 'flex' peer (torch.compile on CPU) will fail;"
  say "         install one (Debian: apt-get install g++). SDPA peers work without it."
fi

VPY="$VENV/bin/python"
check_installed() {
  [ -x "$VPY" ] && "$VPY" - "$TORCH_VERSION" "$NUMPY_VERSION" <<'PYEOF' 2>/dev/null
import sys
import numpy, torch
want_t, want_n = sys.argv[1], sys.argv[2]
ok = torch.__version__.split("+")[0] == want_t and numpy.__version__ == want_n
sys.exit(0 if ok else 1)
PYEOF
}

smoke_test() {
  "$VPY" - <<'PYEOF'
import time
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention, create_block_mask  # noqa: F401
q = torch.randn(1, 1, 64, 16)
o = F.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(64, 64, dtype=torch.bool).tril())
d = F.scaled_dot_product_attention(q, q, q, is_causal=True)
assert torch.allclose(o, d, atol=1e-5), "SDPA masked and causal disagree"
print(f"setup.sh: torch {torch.__version__} (cuda build: {torch.version.cuda is not None}, "
      f"CPU capability {torch.backends.cpu.get_cpu_capability()}), SDPA works on CPU")
PYEOF
}

if check_installed; then
  say "already installed in $VENV: nothing to do"
  smoke_test || die "the existing venv at $VENV is broken; remove it (rm -rf '$VENV') and run setup.sh again"
  exit 0
fi

T0=$(date +%s)
if [ ! -x "$VPY" ] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
  say "creating virtual environment $VENV with $("$PY" -V 2>&1)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || die "'$PY -m venv' failed (Debian: apt-get install python3-venv)"
else
  say "reusing virtual environment $VENV"
fi
PIP=("$VPY" -m pip --disable-pip-version-check)

installed_from=""
if [ "$TORCH_SOURCE" != "pypi" ]; then
  local_args=(--no-index --no-deps)
  if [ -n "${TORCH_WHEEL:-}" ]; then
    [ -f "$TORCH_WHEEL" ] || die "TORCH_WHEEL=$TORCH_WHEEL is not a file"
    local_req="$TORCH_WHEEL"
  else
    local_req="torch==${TORCH_VERSION}+cpu"
  fi
  say "looking for a local CPU-only wheel ($local_req, through pip's find-links)..."
  if "${PIP[@]}" install -q "${local_args[@]}" "$local_req" 2>/dev/null; then
    installed_from="local CPU-only wheel"
    say "installed torch from the local CPU-only wheel; now its pure-Python dependencies and numpy from PyPI"
    "${PIP[@]}" install -q "torch==${TORCH_VERSION}+cpu" "numpy==${NUMPY_VERSION}" \
      || die "pip could not install torch's dependencies (filelock, sympy, networkx, jinja2, fsspec, ...) or numpy from PyPI"
  elif [ "$TORCH_SOURCE" = "local" ]; then
    die "TORCH_SOURCE=local but no wheel torch==${TORCH_VERSION}+cpu was found (set TORCH_WHEEL=/path/to/wheel or PIP_FIND_LINKS=dir)"
  else
    say "no local CPU-only wheel found"
  fi
fi
if [ -z "$installed_from" ]; then
  say "installing torch==${TORCH_VERSION} and numpy==${NUMPY_VERSION} from PyPI"
  say "(PyPI's Linux torch is the CUDA build: ~2.6 GB of downloads, ~4.7 GB installed; it runs on CPU without a GPU)"
  "${PIP[@]}" install --progress-bar off "torch==${TORCH_VERSION}" "numpy==${NUMPY_VERSION}" \
    || die "pip install torch==${TORCH_VERSION} numpy==${NUMPY_VERSION} failed (is PyPI reachable? enough disk?)"
  installed_from="PyPI"
fi

check_installed || die "torch ${TORCH_VERSION} / numpy ${NUMPY_VERSION} do not import from $VENV after installing"
smoke_test || die "torch imported but the smoke test failed"
T1=$(date +%s)
say "installed torch ${TORCH_VERSION} (from the ${installed_from}) and numpy ${NUMPY_VERSION} into $VENV"
say "venv size $(du -sh "$VENV" 2>/dev/null | cut -f1), took $((T1 - T0)) s"
say "next: $VPY $HERE/torch_peers.py --self-test"
