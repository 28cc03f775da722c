"""The benchmark's PyTorch peer script: it names each peer on stderr before running it (a compile can take
minutes) and prints one JSON object per peer as soon as that peer finishes."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "Benchmarks" / "peers" / "torch_peers.py"


def test_each_peer_is_announced_then_reported():
    result = subprocess.run([sys.executable, str(SCRIPT), "--mask", "window:4", "--tokens", "64", "--dim", "8",
                             "--heads", "1", "--threads", "1", "--repeats", "1", "--peers", "sdpa_masked,sdpa_dense"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "peer sdpa_masked: window:4, 64 tokens" in result.stderr
    assert "peer sdpa_dense: window:4, 64 tokens" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [row["peer"] for row in rows] == ["sdpa_masked", "sdpa_dense"]
    assert all(row["status"] == "ok" and row["median_seconds"] > 0 for row in rows), rows
