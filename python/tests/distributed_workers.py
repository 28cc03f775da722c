"""Process bodies for test_distributed.py: each runs in its own process (torch.multiprocessing spawn) with a gloo
group, computes its shard of distributed attention and writes what it saw to RESULT_DIR/rank.pt."""
import datetime
import os
import traceback

import torch
import torch.distributed as dist


def launch(rank, world, port, body, arguments, result_dir, timeout_s):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    result = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
        result = globals()[body](rank, world, *arguments)
    except BaseException as error:  # noqa: BLE001 - the parent reads it
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    torch.save(result, os.path.join(result_dir, f"{rank}.pt"))
    try:
        if dist.is_initialized() and "error" not in result:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass


def inputs(case, seed):
    """Global Q, K, V, dO (independent streams) for a case dict: tokens, batch, heads, kv_heads, dim, layout."""
    b, h, hkv, l, d = case.get("batch", 1), case.get("heads", 2), case.get("kv_heads", case.get("heads", 2)), case["tokens"], \
        case.get("dim", 8)
    streams = [torch.Generator().manual_seed(seed * 10 + i) for i in range(4)]
    q = torch.randn(b, h, l, d, generator=streams[0])
    k = torch.randn(b, hkv, l, d, generator=streams[1])
    v = torch.randn(b, hkv, l, d, generator=streams[2])
    do = torch.randn(b, h, l, d, generator=streams[3])
    layout = case.get("layout", 4)
    if layout == 3:
        q, k, v, do = q[0], k[0], v[0], do[0]
    elif layout == 2:
        q, k, v, do = q[0, 0], k[0, 0], v[0, 0], do[0, 0]
    return q, k, v, do


def options(case):
    out = {}
    for name in ("softcap", "alibi", "scale"):
        if name in case:
            out[name] = case[name]
    return out


def shards(case, world):
    sizes = case.get("shard_sizes")
    if sizes is None:
        import graph_attention.distributed as gad

        sizes = [gad.shard(torch.empty(case["tokens"], 1), r, world, case.get("placement", "contiguous")).shape[-2]
                 for r in range(world)]
    return sizes


def local_shard(x, case, rank, world):
    """This rank's shard of the global `x` for the case's placement and shard sizes."""
    import graph_attention.distributed as gad

    if case.get("shard_sizes") is not None:
        sizes = case["shard_sizes"]
        return x.narrow(-2, sum(sizes[:rank]), sizes[rank])
    return gad.shard(x, rank, world, case.get("placement", "contiguous"))


def layout(case):
    """The case's placement and schedule keywords."""
    return {"placement": case.get("placement", "contiguous"), "schedule": case.get("schedule", "auto")}


def cases(rank, world, case_list, seed):
    """Forward, gradients, traffic and the plan's counts for each case; everything in the result."""
    import graph_attention.distributed as gad

    results = []
    for n, case in enumerate(case_list):
        q, k, v, do = inputs(case, seed + n)
        sizes = shards(case, world)
        local = [local_shard(x, case, rank, world).clone().requires_grad_(True) for x in (q, k, v)]
        local_do = local_shard(do, case, rank, world)
        sinks = None
        if case.get("sinks"):
            sinks = torch.linspace(-1.0, 1.0, q.shape[-3] if q.dim() >= 3 else 1).requires_grad_(True)
        out, lse = gad.attention(*local, case["mask"], sinks=sinks, return_lse=True,
                                 shard_sizes=case.get("shard_sizes"), threads=1, **options(case), **layout(case))
        forward_traffic = gad.traffic()["forward"]
        out.backward(local_do)
        traffic = gad.traffic()
        heads = q.shape[-3] if q.dim() >= 3 else 1
        batch = q.shape[0] if q.dim() == 4 else 1
        kv_heads = k.shape[-3] if k.dim() >= 3 else 1
        plan = gad.plan(case["mask"], case["tokens"], world, case.get("shard_sizes"), batch=batch, heads=heads,
                        kv_heads=kv_heads, head_dim=q.shape[-1], value_dim=v.shape[-1], **layout(case))
        # Again, for the bits: the same inputs give the same output and gradients.
        again = [x.detach().clone().requires_grad_(True) for x in local]
        out2 = gad.attention(*again, case["mask"], sinks=None if sinks is None else sinks.detach().clone(),
                             shard_sizes=case.get("shard_sizes"), threads=1, **options(case), **layout(case))
        out2.backward(local_do)
        results.append({
            "out": out.detach(), "lse": lse, "grads": [x.grad for x in local],
            "dsinks": None if sinks is None else sinks.grad, "forward_bytes": forward_traffic,
            "backward_bytes": traffic["backward"], "plan_forward": plan.forward_bytes[rank],
            "plan_backward": plan.backward_bytes[rank], "schedule": plan.schedule,
            "fetched_keys_peak": traffic["fetched_keys_peak"], "plan_fetched_keys_peak": plan.fetched_keys_peak[rank],
            "same_bits": bool(torch.equal(out2.detach(), out.detach())
                              and all(torch.equal(a.grad, b.grad) for a, b in zip(again, local))),
        })
    return {"results": results}


def bad_rank(rank, world, which):
    """Rank 1 passes a bad input (or option); every rank must raise."""
    import graph_attention.distributed as gad

    if which == "placement":
        q = torch.randn(2, 12, 8)
        gad.attention(q, q, q, "causal", threads=1, placement="zigzig" if rank == 1 else "zigzag")
        return {"returned": True}

    q = torch.randn(2, 12, 8)
    k, v = torch.randn(2, 12, 8), torch.randn(2, 12, 8)
    if rank == 1:
        if which == "nan":
            k[0, 3, 1] = float("nan")
        elif which == "shape":
            v = torch.randn(2, 12, 5)
        elif which == "heads":
            q = torch.randn(4, 12, 8)
    gad.attention(q, k, v, "window:3", threads=1)
    return {"returned": True}


def dying_rank(rank, world):
    """Rank 1 exits abruptly mid-job; the others must raise (not hang)."""
    import graph_attention.distributed as gad

    q = torch.randn(2, 12, 8, requires_grad=True)
    out = gad.attention(q, q, q, "window:3", threads=1)
    if rank == 1:
        os._exit(3)
    out.sum().backward()
    gad.attention(q, q, q, "window:3", threads=1)
    return {"returned": True}
