"""graph_attention as a transformers attn_implementation, checked against transformers' own eager attention on
tiny random-initialised models (no download): logits, parameter gradients, greedy generation with the KV cache,
padding, packed documents, torch.compile; and the mask function's graphs against transformers' dense masks."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import graph_attention  # noqa: E402
import graph_attention.transformers as gat  # noqa: E402
from transformers import masking_utils as mu  # noqa: E402

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0)
WINDOW = 6


def _config(family):
    if family == "llama":
        return transformers.LlamaConfig(**COMMON)
    if family == "mistral":
        return transformers.MistralConfig(**COMMON, sliding_window=WINDOW)
    if family == "qwen2":
        return transformers.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1,
                                        layer_types=["full_attention", "sliding_attention"])
    if family == "gemma2":
        return transformers.Gemma2Config(**COMMON, head_dim=8, sliding_window=WINDOW, attn_logit_softcapping=2.0,
                                         final_logit_softcapping=30.0, query_pre_attn_scalar=8)
    if family == "gpt_oss":
        return transformers.GptOssConfig(**COMMON, head_dim=8, num_local_experts=2, num_experts_per_tok=1,
                                         sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])
    if family == "modernbert":
        return transformers.ModernBertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                             num_hidden_layers=3, num_attention_heads=4, local_attention=2 * WINDOW,
                                             global_attn_every_n_layers=3, max_position_embeddings=512,
                                             pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                             sep_token_id=2)
    raise ValueError(family)


_MODELS = {}


def _model(family):
    """One model per family (built once, weights seeded), in eval mode with eager attention selected."""
    if family not in _MODELS:
        torch.manual_seed(1234)
        config = _config(family)
        auto = transformers.AutoModelForMaskedLM if family == "modernbert" else transformers.AutoModelForCausalLM
        model = auto.from_config(config, attn_implementation="eager")
        with torch.no_grad():
            if family == "gpt_oss":
                for layer in model.model.layers:
                    layer.self_attn.sinks.normal_()  # sinks start at zero; random ones make them matter
            if family == "gemma2":
                for p in model.parameters():
                    p.mul_(3.0)  # scores big enough for the softcap of 2 to bend them
        _MODELS[family] = model.eval()
    model = _MODELS[family]
    model.set_attn_implementation("eager")
    return model


def _run(model, implementation, fn):
    model.set_attn_implementation(implementation)
    try:
        return fn()
    finally:
        model.set_attn_implementation("eager")


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _ids(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


FAMILIES = ["llama", "mistral", "qwen2", "gemma2", "gpt_oss", "modernbert"]
CAUSAL = [f for f in FAMILIES if f != "modernbert"]


def test_register_names_both_interfaces():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert gat.register() == "graph_attention"
    assert AttentionInterface._global_mapping["graph_attention"] is gat.graph_attention_forward
    assert AttentionMaskInterface._global_mapping["graph_attention"] is gat.graph_mask_function
    model = transformers.AutoModelForCausalLM.from_config(_config("llama"), attn_implementation="graph_attention")
    assert model.config._attn_implementation == "graph_attention"
    model.set_attn_implementation("eager")
    model.set_attn_implementation("graph_attention")
    assert model.model.layers[0].self_attn.config._attn_implementation == "graph_attention"


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_gradients_match_eager(family):
    model = _model(family)
    ids = _ids(2, 23)  # longer than the windows (6 back; ModernBERT's 6 each side)

    def logits_and_grads():
        model.zero_grad()
        logits = model(ids).logits
        logits.float().square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_logits, ref_grads = _run(model, "eager", logits_and_grads)
    logits, grads = _run(model, "graph_attention", logits_and_grads)
    assert _relative(logits, ref_logits) < 1e-4
    assert grads.keys() == ref_grads.keys()
    worst = max(_relative(grads[n], ref_grads[n]) for n in grads if ref_grads[n].abs().max() > 0)
    assert worst < 1e-3, worst
    if family == "gpt_oss":
        assert any("sinks" in n for n in grads)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_left_and_right_match_eager_on_every_row(family):
    model = _model(family)
    ids = _ids(3, 21, seed=1)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, 15:] = 0  # right padding (eager's padded rows included)
    with torch.no_grad():
        ref = _run(model, "eager", lambda: model(ids, attention_mask=mask).logits)
        out = _run(model, "graph_attention", lambda: model(ids, attention_mask=mask).logits)
    assert _relative(out, ref) < 1e-4


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "gpt_oss"])
def test_padding_gradients_match_eager_when_padding_is_ignored(family):
    model = _model(family)
    ids = _ids(2, 19, seed=2)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    labels = ids.masked_fill(mask == 0, -100)

    def grads():
        model.zero_grad()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = _run(model, "eager", grads)
    got = _run(model, "graph_attention", grads)
    worst = max(_relative(got[n], ref[n]) for n in ref if ref[n].abs().max() > 0)
    assert worst < 1e-3, worst


@pytest.mark.parametrize("family", CAUSAL)
def test_greedy_generate_with_cache_matches_eager(family):
    model = _model(family)
    ids = _ids(2, 11, seed=3)  # prompt beyond the window: sliding-window caches drop keys while decoding
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded prompt in the batch
    kwargs = dict(attention_mask=mask, max_new_tokens=9, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ref = _run(model, "eager", lambda: model.generate(ids, **kwargs))
        out = _run(model, "graph_attention", lambda: model.generate(ids, **kwargs))
    assert torch.equal(out, ref)


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2", "gpt_oss"])
def test_packed_documents_equal_separate_runs(family):
    """Positions that restart mark packed documents (as transformers finds them without a cache)."""
    model = _model(family)
    lengths = [7, 12, 5]
    docs = [_ids(1, n, seed=10 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(docs, dim=1)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        separate = torch.cat([_run(model, "graph_attention", lambda d=d: model(d).logits) for d in docs], dim=1)
        together = _run(model, "graph_attention",
                        lambda: model(packed, position_ids=positions, use_cache=False).logits)
        eager = _run(model, "eager", lambda: model(packed, position_ids=positions, use_cache=False).logits)
    assert _relative(together, separate) < 1e-4
    if family != "gpt_oss":  # GPT-OSS builds its masks without the positions: eager attends across documents
        assert _relative(together, eager) < 1e-4


@pytest.mark.parametrize("family", ["llama", "modernbert"])
def test_flash_style_cu_seq_lens_make_documents(family):
    """`cu_seq_lens_q/k` (DataCollatorWithFlattening's keyword arguments) cut the row into documents."""
    model = _model(family)
    lengths = [9, 4, 10]
    docs = [_ids(1, n, seed=20 + i) for i, n in enumerate(lengths)]
    packed = torch.cat(docs, dim=1)
    cu = torch.tensor([0, 9, 13, 23], dtype=torch.int32)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    kwargs = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=10, max_length_k=10)
    if family != "modernbert":
        kwargs["use_cache"] = False
    with torch.no_grad():
        separate = torch.cat([_run(model, "graph_attention", lambda d=d: model(d).logits) for d in docs], dim=1)
        together = _run(model, "graph_attention", lambda: model(packed, position_ids=positions, **kwargs).logits)
        # Positions that do not restart: only cu_seq_lens says where the documents are (the first one matches).
        plain = _run(model, "graph_attention", lambda: model(packed, **kwargs).logits)
    assert _relative(together, separate) < 1e-4
    assert _relative(plain[:, :9], separate[:, :9]) < 1e-4


@pytest.mark.parametrize("family", ["mistral", "gpt_oss"])
def test_torch_compile_of_model_forward(family):
    model = _model(family)
    ids = _ids(1, 17, seed=4)
    torch._dynamo.reset()
    with torch.no_grad():
        ref = _run(model, "eager", lambda: model(ids).logits)
        model.set_attn_implementation("graph_attention")
        try:
            compiled = torch.compile(model.forward, backend="aot_eager")
            out = compiled(ids).logits
            out2 = compiled(ids).logits
        finally:
            model.set_attn_implementation("eager")
    assert _relative(out, ref) < 1e-4
    assert torch.equal(out, out2)


def test_training_with_attention_dropout_is_an_error():
    config = _config("llama")
    config.attention_dropout = 0.1
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="graph_attention").train()
    with pytest.raises(graph_attention.GraphAttentionError, match="dropout"):
        model(_ids(1, 8))
    model.eval()
    model(_ids(1, 8))  # no dropout at inference


# ---------------------------------------------------------------------------------------------------------------
# The mask function's graphs against transformers' own dense masks


def _dense(graph_mask):
    """The boolean [B, L_q, L_k] mask a GraphMask stands for (True where a row attends a key), and the masked
    rows (no key: eager's uniform rows)."""
    b, lq, lk = graph_mask.batch_size, graph_mask.q_length, graph_mask.kv_length
    dense = np.zeros((b, lq, lk), bool)
    masked = np.zeros((b, lq), bool)
    for batch, parts in graph_mask.groups:
        for part in parts:
            if part.spec is None:
                masked[list(batch), part.r0:part.r1] = True
                continue
            block = graph_attention.Graph(part.spec).to_dense(part.r1 - part.r0, part.c1 - part.c0)
            if part.flip:
                block = block[::-1, ::-1]
            for i in batch:
                dense[i, part.r0:part.r1, part.c0:part.c1] = block
    for batch, rows in graph_mask.masked_rows:
        masked[list(batch)] |= rows
    return dense, masked


def _check_against_sdpa(mask_function, batch, lq, lk, q_offset=0, kv_offset=0, attention_mask=None, explicit=None):
    got = gat.graph_mask_function(batch, lq, lk, q_offset=q_offset, kv_offset=kv_offset, mask_function=mask_function,
                                  attention_mask=attention_mask)
    want = mu.sdpa_mask(batch_size=batch, q_length=lq, kv_length=lk, q_offset=q_offset, kv_offset=kv_offset,
                        mask_function=mask_function, attention_mask=attention_mask, allow_is_causal_skip=False)
    want = want[:, 0].expand(batch, lq, lk).numpy()
    dense, masked = _dense(got)
    np.testing.assert_array_equal(dense, want)
    np.testing.assert_array_equal(masked, ~want.any(-1))
    if explicit is not None:
        is_explicit = any(p.spec and p.spec.startswith("csr:") for _, parts in got.groups for p in parts)
        assert is_explicit == explicit
    return got


@pytest.mark.parametrize("kind", ["causal", "sliding", "bidirectional", "bidirectional-window"])
def test_mask_graphs_equal_transformers_masks(kind):
    rng = np.random.default_rng(5)
    functions = {"causal": lambda w: mu.causal_mask_function,
                 "sliding": mu.sliding_window_causal_mask_function,
                 "bidirectional": lambda w: mu.bidirectional_mask_function,
                 "bidirectional-window": mu.sliding_window_bidirectional_mask_function}
    for trial in range(40):
        window = int(rng.integers(1, 9))
        lq = int(rng.integers(1, 20))
        if kind.startswith("bidirectional"):
            lk, q_offset, kv_offset = lq, 0, 0
        else:
            past = int(rng.integers(0, 15))
            kv_offset = int(rng.integers(0, past + 1))  # a sliding cache keeps the last keys only
            lk, q_offset = past - kv_offset + lq, past
        batch = 3
        padding = np.ones((batch, kv_offset + lk), bool)
        left, right = int(rng.integers(0, lk // 2 + 1)), int(rng.integers(0, lk // 2 + 1))
        padding[1, kv_offset:kv_offset + left] = False
        padding[2, kv_offset + lk - right:] = False
        if trial % 5 == 0:
            padding[0, :] = False  # a row of nothing but padding
        _check_against_sdpa(functions[kind](window), batch, lq, lk, q_offset, kv_offset, torch.from_numpy(padding),
                            explicit=False)


def test_mask_graphs_packed_and_chunked():
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]])
    packed = mu.find_packed_sequence_indices(positions)
    for base in (mu.causal_mask_function, mu.sliding_window_causal_mask_function(3),
                 mu.bidirectional_mask_function, mu.sliding_window_bidirectional_mask_function(2)):
        fn = mu.and_masks(mu.remap_positions_for_packed_sequence(base, positions),
                          mu.packed_sequence_mask_function(packed))
        got = _check_against_sdpa(fn, 2, 12, 12, explicit=False)
        assert all("documents:" in p.spec for _, parts in got.groups for p in parts)
    left = torch.tensor([0, 3])
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[1, :3] = False
    _check_against_sdpa(mu.chunked_causal_mask_function(4, left), 2, 12, 12, attention_mask=padding, explicit=False)


def test_other_mask_functions_become_explicit_graphs():
    def image_block(batch_idx, head_idx, q_idx, kv_idx):  # bidirectional inside tokens 4..8, as VLM overlays do
        return (q_idx >= 4) & (q_idx < 9) & (kv_idx >= 4) & (kv_idx < 9)

    padding = torch.ones(2, 14, dtype=torch.bool)
    padding[1, :2] = False
    fn = mu.or_masks(mu.causal_mask_function, image_block)
    _check_against_sdpa(fn, 2, 14, 14, attention_mask=padding, explicit=True)


def test_explicit_graph_over_budget_is_an_error(monkeypatch):
    monkeypatch.setenv("GRAPH_ATTENTION_MAX_EXPLICIT_EDGES", "100")
    fn = mu.or_masks(mu.causal_mask_function, lambda b, h, q, k: k == 0)
    with pytest.raises(graph_attention.GraphAttentionError, match="GRAPH_ATTENTION_MAX_EXPLICIT_EDGES"):
        gat.graph_mask_function(1, 64, 64, mask_function=fn)


def test_prepared_4d_mask_is_read_as_a_graph():
    model = _model("llama")
    ids = _ids(1, 10, seed=6)
    dense = torch.tril(torch.ones(10, 10, dtype=torch.bool))
    dense[:, 0] = True
    dense[7, 2:5] = False
    with torch.no_grad():
        ref = _run(model, "eager", lambda: model(ids, attention_mask=torch.where(dense, 0.0, torch.finfo(torch.float32).min)[None, None]).logits)
        out = _run(model, "graph_attention", lambda: model(ids, attention_mask=dense[None, None]).logits)
    assert _relative(out, ref) < 1e-4


def test_long_sliding_window_forward_memory_is_proportional_to_tokens():
    """32K tokens through a one-layer Mistral with a 64-token window: the peak resident memory stays far below
    one dense [L, L] boolean mask (1 GiB), let alone eager's fp32 scores (4 GiB per head)."""
    script = textwrap.dedent("""
        import resource, torch, transformers
        import graph_attention.transformers
        torch.manual_seed(0)
        config = transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, sliding_window=64,
                                            max_position_embeddings=40000)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="graph_attention").eval()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.no_grad():
            logits = model(torch.randint(0, 64, (1, 32768))).logits
        assert torch.isfinite(logits).all()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    grown = int(result.stdout.strip().splitlines()[-1])
    assert grown < 400 * 2**20, f"peak memory grew by {grown / 2**20:.0f} MiB"
