/// Runs each (batch element, query head) with its own graph through the single-graph engine, on
/// views of that head's rows (contiguous in the `[B, H, L, d]` layout).
func headwiseAttention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView,
                       shape: AttentionShape, graphs: [Graph], options: AttentionOptions, rows: Range<Int>?,
                       logSumExp: MutableTensorView?) throws -> AttentionWork {
  let calls = shape.batch * shape.queryHeads
  var work = AttentionWork(edges: 0, scoresComputed: 0)
  var headOptions = options
  let modifiers = try ScoreModifiers(options: options, shape: shape)
  for call in 0..<calls {
    let h = call % shape.queryHeads
    let kv = shape.keyValueHead(ofQueryHead: call)
    headOptions.setModifiers(modifiers, head: h)
    if let progress = options.progress {
      headOptions.progress = { progress((Double(call) + $0) / Double(calls)) }
    }
    let q = TensorView(shape: [shape.queryCount, shape.keyDim], type: query.type,
                       base: query.base + call * shape.queryCount * shape.keyDim * query.type.byteCount, owner: query.owner)
    let k = TensorView(shape: [shape.keyCount, shape.keyDim], type: key.type,
                       base: key.base + kv * shape.keyCount * shape.keyDim * key.type.byteCount, owner: key.owner)
    let v = TensorView(shape: [shape.keyCount, shape.valueDim], type: value.type,
                       base: value.base + kv * shape.keyCount * shape.valueDim * value.type.byteCount, owner: value.owner)
    let o = MutableTensorView(shape: [shape.queryCount, shape.valueDim], type: output.type,
                              base: output.base + call * shape.queryCount * shape.valueDim * output.type.byteCount, owner: output.owner)
    let lse = logSumExp.map {
      MutableTensorView(shape: [shape.queryCount], type: .float32, base: $0.base + call * shape.queryCount * 4, owner: $0.owner)
    }
    let headWork = try viewAttention(query: q, key: k, value: v, output: o, graph: graphs[h], options: headOptions, rows: rows,
                                     streaming: nil, logSumExp: lse)
    work.edges += headWork.edges
    work.scoresComputed += headWork.scoresComputed
  }
  return work
}

/// Per-head graphs (resolved: one per query head, specialised) on the CPU backward: each (batch element,
/// query head) runs through the single-graph backward on views of its rows, and a key/value head's `dK`
/// and `dV` add its query heads' contributions in head order.
func headwiseGradients(query: TensorView, key: TensorView, value: TensorView, output: TensorView, logSumExp: TensorView,
                       gradOutput: TensorView, gradQuery: MutableTensorView, gradKey: MutableTensorView,
                       gradValue: MutableTensorView, shape s: AttentionShape, graphs: [Graph], options: AttentionOptions,
                       gradSinks: MutableTensorView?) throws -> AttentionWork {
  let modifiers = try ScoreModifiers(options: options, shape: s)
  var headOptions = options
  let headGradSink = MutableTensorView(allocating: [1], type: .float32)
  let gradSinkSums = gradSinks?.base.assumingMemoryBound(to: Float.self)
  for h in 0..<s.queryHeads { gradSinkSums?[h] = 0 }
  let rowShape = Array(query.shape.dropLast())
  for (name, view, expected) in [("output", output.shape, s.outputShape), ("gradOutput", gradOutput.shape, s.outputShape),
                                 ("logSumExp", logSumExp.shape, rowShape), ("gradQuery", gradQuery.shape, query.shape),
                                 ("gradKey", gradKey.shape, key.shape), ("gradValue", gradValue.shape, value.shape)] where view != expected {
    throw GraphAttentionError(.shape, "\(name) has shape \(view) but should have shape \(expected)",
                              fix: "pass tensors shaped like the forward's (gradients like their inputs)")
  }
  for (name, type) in [("logSumExp", logSumExp.type), ("gradKey", gradKey.type), ("gradValue", gradValue.type)] where type != .float32 {
    throw GraphAttentionError(.dtype, "\(name) is \(type.rawValue), not fp32", fix: "create the log-sum-exp and the gradients as fp32")
  }
  let group = s.groupSize
  let (lq, lk, dk, dv) = (s.queryCount, s.keyCount, s.keyDim, s.valueDim)
  func slice(_ v: TensorView, _ index: Int, _ rows: Int, _ width: Int) -> TensorView {
    TensorView(shape: width == 0 ? [rows] : [rows, width], type: v.type,
               base: v.base + index * rows * max(width, 1) * v.type.byteCount, owner: v.owner)
  }
  func slice(_ v: MutableTensorView, _ index: Int, _ rows: Int, _ width: Int) -> MutableTensorView {
    MutableTensorView(shape: [rows, width], type: v.type, base: v.base + index * rows * width * v.type.byteCount, owner: v.owner)
  }
  // A group's later query heads write their dK, dV here, then add them to the first head's.
  let extraKey = group > 1 ? MutableTensorView(allocating: [lk, dk], type: .float32) : nil
  let extraValue = group > 1 ? MutableTensorView(allocating: [lk, dv], type: .float32) : nil
  var work = AttentionWork(edges: 0, scoresComputed: 0)
  for call in 0..<(s.batch * s.queryHeads) {
    let h = call % s.queryHeads
    let kv = s.keyValueHead(ofQueryHead: call)
    let first = h % group == 0
    let headKey = first ? slice(gradKey, kv, lk, dk) : extraKey!
    let headValue = first ? slice(gradValue, kv, lk, dv) : extraValue!
    headOptions.setModifiers(modifiers, head: h)
    let headWork = try attentionGradients(
      query: slice(query, call, lq, dk), key: slice(key, kv, lk, dk), value: slice(value, kv, lk, dv),
      output: slice(output, call, lq, dv), logSumExp: slice(logSumExp, call, lq, 0), gradOutput: slice(gradOutput, call, lq, dv),
      gradQuery: slice(gradQuery, call, lq, dk), gradKey: headKey, gradValue: headValue, graphs: .shared(graphs[h]),
      options: headOptions, gradSinks: gradSinks == nil ? nil : headGradSink)
    gradSinkSums?[h] += headGradSink.base.assumingMemoryBound(to: Float.self)[0]
    if !first {
      for (extra, destination) in [(headKey, slice(gradKey, kv, lk, dk)), (headValue, slice(gradValue, kv, lk, dv))] {
        let source = extra.base.assumingMemoryBound(to: Float.self)
        let target = destination.base.assumingMemoryBound(to: Float.self)
        for e in 0..<destination.count { target[e] += source[e] }
      }
    }
    work.edges += headWork.edges
    work.scoresComputed += headWork.scoresComputed
  }
  return work
}

extension AttentionOptions {
  /// Sets the score modifiers of query head `head` alone (ALiBi slope and sink as one-element lists,
  /// softcap unchanged), for a call on that head's slice: the slice has one head, so `.standard` slopes
  /// must be resolved for the whole call first.
  mutating func setModifiers(_ modifiers: ScoreModifiers, head: Int) {
    alibi = modifiers.slopes.map { .slopes([$0[head]]) }
    sinks = modifiers.sinks.map { [$0[head]] }
  }
}
