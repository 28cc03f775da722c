/// The pages of a streamed job: what each chunk asks the kernel to read ahead, and what it releases when
/// done, so the resident set stays bounded however long the context is.
struct StreamingPages: @unchecked Sendable {
  let query: TensorView
  let key: TensorView
  let value: TensorView
  let output: MutableTensorView
  let shape: AttentionShape
  /// Keys a query row reaches around itself (`Graph.backwardReach`).
  let reach: Int

  init(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, shape: AttentionShape, graph: Graph) {
    self.query = query
    self.key = key
    self.value = value
    self.output = output
    self.shape = shape
    self.reach = graph.backwardReach(keyCount: shape.keyCount)
  }

  /// Asks the kernel to read the chunk's query rows and its local span of keys and values ahead.
  func prefetch(rows: Range<Int>) {
    for head in 0..<(shape.batch * shape.queryHeads) {
      query.willNeed(elements: elements(head: head, count: shape.queryCount, rows: rows, dim: shape.keyDim))
    }
    guard reach < shape.keyCount else { return }
    let span = max(0, rows.lowerBound - reach)..<min(shape.keyCount, rows.upperBound + reach)
    for head in 0..<(shape.batch * shape.keyValueHeads) {
      key.willNeed(elements: elements(head: head, count: shape.keyCount, rows: span, dim: shape.keyDim))
      value.willNeed(elements: elements(head: head, count: shape.keyCount, rows: span, dim: shape.valueDim))
    }
  }

  /// Releases the resident pages a finished chunk no longer needs: its query and output rows (the output's
  /// dirty pages are written back, `MappedFile.dropPages`), and keys and values outside the graph's reach
  /// around the next chunk. Scattered keys (global tokens, random and explicit edges) touch pages anywhere;
  /// those are released too and simply fault back in if needed.
  ///
  /// The output rows of the chunk before this one, whose write-back `dropPages` started a chunk ago, are
  /// also dropped from the page cache, so dirty and written output pages do not accumulate there either.
  func release(done rows: Range<Int>) {
    let previous = max(0, rows.lowerBound - rows.count)..<rows.lowerBound
    for head in 0..<(shape.batch * shape.queryHeads) {
      query.dropPages(elements: elements(head: head, count: shape.queryCount, rows: rows, dim: shape.keyDim))
      output.dropPages(elements: elements(head: head, count: shape.queryCount, rows: rows, dim: shape.valueDim))
      if let file = output.mappedFile, !previous.isEmpty {
        let range = elements(head: head, count: shape.queryCount, rows: previous, dim: shape.valueDim)
        file.evictCleanPages(byteRange: storageByteRange(UnsafeRawPointer(output.base), in: file, range, output.type))
      }
    }
    let keep = max(0, rows.upperBound - reach)..<min(shape.keyCount, rows.upperBound + reach + rows.count)
    for head in 0..<(shape.batch * shape.keyValueHeads) {
      for (view, dim) in [(key, shape.keyDim), (value, shape.valueDim)] {
        if keep.lowerBound > 0 { view.dropPages(elements: elements(head: head, count: shape.keyCount, rows: 0..<keep.lowerBound, dim: dim)) }
        if keep.upperBound < shape.keyCount {
          view.dropPages(elements: elements(head: head, count: shape.keyCount, rows: keep.upperBound..<shape.keyCount, dim: dim))
        }
      }
    }
  }

  /// A global token's row streams the whole key file: its pages go as the row passes them.
  func keysFinished(kvHead: Int, keys span: Range<Int>) {
    key.dropPages(elements: elements(head: kvHead, count: shape.keyCount, rows: span, dim: shape.keyDim))
    value.dropPages(elements: elements(head: kvHead, count: shape.keyCount, rows: span, dim: shape.valueDim))
  }

  /// Elements of rows `rows` of head `head` in a `[heads, count, dim]` tensor.
  private func elements(head: Int, count: Int, rows: Range<Int>, dim: Int) -> Range<Int> {
    (head * count + rows.lowerBound) * dim..<(head * count + rows.upperBound) * dim
  }
}
