"""Graph: parsing, validation, edge counts and degrees against the independent dense mask."""
import numpy as np
import pytest

import graph_attention
from graph_attention import Graph, GraphAttentionError, GraphAttentionOSError
from masks import L, SELF_MASKS, write_explicit_graphs
from reference import dense_mask


@pytest.mark.parametrize("spec", SELF_MASKS)
def test_counts_match_the_dense_mask(spec):
    g = Graph(spec)
    mask = dense_mask(spec, L)
    assert g.edge_count(L) == mask.sum()
    for row in (0, 1, L // 2, L - 1):
        assert g.degree(row, L) == mask[row].sum()
    if not spec.startswith("random") and "random" not in spec:
        assert np.array_equal(g.to_dense(L), mask)  # the engine's graph equals the independent builder's


def test_explicit_graphs_cross_attention(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in write_explicit_graphs(tmp_path, 33, 71):
        g = Graph(spec)
        mask = dense_mask(spec, 33, 71)
        assert g.edge_count(33, 71) == mask.sum()
        assert np.array_equal(g.to_dense(33, 71), mask)


def test_repr_and_str():
    g = Graph("window:4+global:0")
    assert repr(g) == "Graph('window:4+global:0')"
    assert "window" in str(g)


def test_bad_specification_names_the_fix():
    with pytest.raises(GraphAttentionError) as error:
        Graph("window:-3")
    assert error.value.kind == "mask" and "Fix:" in str(error.value)
    with pytest.raises(ValueError, match="unknown|kind"):
        Graph("wndow:3")
    with pytest.raises(ValueError):
        Graph("window:3++causal")
    with pytest.raises(TypeError):
        Graph(3)


def test_validation_of_lengths():
    g = Graph("window:3+global:10")
    g.validate(20)
    with pytest.raises(GraphAttentionError, match="global token 10"):
        g.validate(8)
    with pytest.raises(GraphAttentionError, match="self-attention"):
        Graph("window:3").validate(8, 9)
    Graph("causal").validate(8, 9)  # causal kinds align bottom-right when L_q != L_k
    with pytest.raises(GraphAttentionError):
        g.edge_count(0)
    with pytest.raises(GraphAttentionError, match="row"):
        g.degree(20, 20)
    with pytest.raises(GraphAttentionError):
        g.to_dense(-1)


def test_missing_graph_file_is_an_os_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphAttentionOSError) as error:
        Graph("csr:missing.npy:also-missing.npy")
    assert isinstance(error.value, OSError) and "missing.npy" in str(error.value)


def test_version():
    assert graph_attention.__version__.count(".") == 2


def test_the_docstring_lists_every_kind_from_the_engine():
    for form in ("full", "causal", "window:W[:causal]", "prefix:P", "documents:0,N1,...,L", "dilated:W:D",
                 "blocked:B[:D]", "global:I,J,...", "random:P:SEED[:per-head]", "csr:", "coo:", "mtx:"):
        assert form in Graph.__doc__, form
    assert "'A&B' the intersection" in Graph.__doc__


def test_an_edited_graph_file_is_read_again_wherever_the_spec_names_it(tmp_path, monkeypatch):
    """The cache watches the files the engine's parser names: inside quotes and after '&' too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a+b").mkdir()
    spec = 'causal&coo:"a+b/rows.npy":"a+b/cols.npy"'
    np.save(tmp_path / "a+b/rows.npy", np.array([3, 5], np.int64))
    np.save(tmp_path / "a+b/cols.npy", np.array([1, 2], np.int64))
    q = np.random.default_rng(1).standard_normal((8, 4), dtype=np.float32)
    first = graph_attention.attention(q, q, q, mask=spec)
    np.save(tmp_path / "a+b/rows.npy", np.array([3, 5, 6], np.int64))
    np.save(tmp_path / "a+b/cols.npy", np.array([1, 2, 0], np.int64))
    second = graph_attention.attention(q, q, q, mask=spec)
    assert np.array_equal(first[6], np.zeros(4)) and not np.array_equal(second[6], np.zeros(4))
    assert graph_attention.graph.mask_files(spec) == ["a+b/rows.npy", "a+b/cols.npy"]
