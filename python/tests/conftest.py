"""Shared fixtures: outputs start as NaN (an unwritten element fails), and the float64 torch reference."""
import os

os.environ["GRAPH_ATTENTION_POISON_OUTPUTS"] = "1"

import graph_attention._library as _library  # noqa: E402

_library.POISON_OUTPUTS = True
