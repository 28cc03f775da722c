/// The online-softmax reduction of one query row over its key runs, on raw pointers.
///
/// Keys are taken in chunks of `chunkCapacity`: the chunk's scores are computed four keys at a time
/// (sharing each load of `q`), the running maximum `m` is raised once per chunk (rescaling `l` and
/// the unnormalised accumulator), and the weights `e^(s - m)` are folded into `acc` four value rows
/// at a time. Each edge costs one `d_k` dot product, one exp and one `d_v` multiply-add: the work is
/// exactly proportional to the row's degree.
@usableFromInline
struct RowKernel {
  /// Keys scored per chunk; a multiple of 8 so the vector exp needs no tail loop.
  @usableFromInline static let chunkCapacity = 64

  @usableFromInline let keys: UnsafePointer<Float>
  @usableFromInline let values: UnsafePointer<Float>
  @usableFromInline let keyDim: Int
  @usableFromInline let valueDim: Int
  @usableFromInline let scale: Float
  /// `chunkCapacity` scores, then `chunkCapacity` key indices (as Int) in `indices`.
  @usableFromInline let scores: UnsafeMutablePointer<Float>
  @usableFromInline let indices: UnsafeMutablePointer<Int>

  @usableFromInline
  init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyDim: Int, valueDim: Int, scale: Float,
       scores: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int>) {
    self.keys = keys
    self.values = values
    self.keyDim = keyDim
    self.valueDim = valueDim
    self.scale = scale
    self.scores = scores
    self.indices = indices
  }

  /// Folds the keys of `runs` into the row state `(m, l, acc)`; `acc` holds `valueDim` floats.
  @inlinable
  func accumulate(query q: UnsafePointer<Float>, runs: UnsafeBufferPointer<KeyRun>,
                  m: inout Float, l: inout Float, acc: UnsafeMutablePointer<Float>) {
    var filled = 0
    for run in runs {
      var key = run.start
      for _ in 0..<run.count {
        indices[filled] = key
        filled &+= 1
        key &+= run.stride
        if filled == RowKernel.chunkCapacity {
          flush(query: q, count: filled, m: &m, l: &l, acc: acc)
          filled = 0
        }
      }
    }
    if filled > 0 { flush(query: q, count: filled, m: &m, l: &l, acc: acc) }
  }

  @inlinable
  func flush(query q: UnsafePointer<Float>, count: Int, m: inout Float, l: inout Float, acc: UnsafeMutablePointer<Float>) {
    // Scores, four keys per pass over q.
    var t = 0
    while t &+ 4 <= count {
      let s = dot4(q, keys + indices[t] &* keyDim, keys + indices[t &+ 1] &* keyDim,
                   keys + indices[t &+ 2] &* keyDim, keys + indices[t &+ 3] &* keyDim)
      scores[t] = s.x * scale
      scores[t &+ 1] = s.y * scale
      scores[t &+ 2] = s.z * scale
      scores[t &+ 3] = s.w * scale
      t &+= 4
    }
    while t < count {
      scores[t] = dot1(q, keys + indices[t] &* keyDim) * scale
      t &+= 1
    }
    let padded = (count &+ 7) & ~7
    var pad = count
    while pad < padded { scores[pad] = -.infinity; pad &+= 1 }

    // Raise the running maximum once per chunk.
    var chunkMax = SIMD8<Float>(repeating: -.infinity)
    var c = 0
    while c < padded {
      let x = VectorMath.load8(scores + c)
      chunkMax = chunkMax.replacing(with: x, where: x .> chunkMax)
      c &+= 8
    }
    let newMax = max(max(max(chunkMax[0], chunkMax[1]), max(chunkMax[2], chunkMax[3])),
                     max(max(chunkMax[4], chunkMax[5]), max(chunkMax[6], chunkMax[7])))
    if newMax > m {
      if m != -.infinity {
        let factor = VectorMath.exp(m - newMax)
        l *= factor
        scaleVector(acc, by: factor)
      }
      m = newMax
    }

    // Weights, their sum, and the weighted values.
    let shift = SIMD8<Float>(repeating: m)
    var sum = SIMD8<Float>()
    c = 0
    while c < padded {
      let p = VectorMath.exp(VectorMath.load8(scores + c) - shift)
      VectorMath.store8(p, scores + c)
      sum += p
      c &+= 8
    }
    l += sum.sum()
    t = 0
    while t &+ 4 <= count {
      axpy4(acc, scores[t], values + indices[t] &* valueDim, scores[t &+ 1], values + indices[t &+ 1] &* valueDim,
            scores[t &+ 2], values + indices[t &+ 2] &* valueDim, scores[t &+ 3], values + indices[t &+ 3] &* valueDim)
      t &+= 4
    }
    while t < count {
      axpy1(acc, scores[t], values + indices[t] &* valueDim)
      t &+= 1
    }
  }

  @inlinable @inline(__always)
  func dot4(_ q: UnsafePointer<Float>, _ k0: UnsafePointer<Float>, _ k1: UnsafePointer<Float>,
            _ k2: UnsafePointer<Float>, _ k3: UnsafePointer<Float>) -> SIMD4<Float> {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var i = 0
    while i &+ 8 <= keyDim {
      let qv = VectorMath.load8(q + i)
      a0 += qv * VectorMath.load8(k0 + i)
      a1 += qv * VectorMath.load8(k1 + i)
      a2 += qv * VectorMath.load8(k2 + i)
      a3 += qv * VectorMath.load8(k3 + i)
      i &+= 8
    }
    var s = SIMD4<Float>(a0.sum(), a1.sum(), a2.sum(), a3.sum())
    while i < keyDim {
      s += q[i] * SIMD4<Float>(k0[i], k1[i], k2[i], k3[i])
      i &+= 1
    }
    return s
  }

  @inlinable @inline(__always)
  func dot1(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>) -> Float {
    var a = SIMD8<Float>()
    var i = 0
    while i &+ 8 <= keyDim {
      a += VectorMath.load8(q + i) * VectorMath.load8(k + i)
      i &+= 8
    }
    var s = a.sum()
    while i < keyDim {
      s += q[i] * k[i]
      i &+= 1
    }
    return s
  }

  @inlinable @inline(__always)
  func axpy4(_ acc: UnsafeMutablePointer<Float>, _ p0: Float, _ v0: UnsafePointer<Float>, _ p1: Float, _ v1: UnsafePointer<Float>,
             _ p2: Float, _ v2: UnsafePointer<Float>, _ p3: Float, _ v3: UnsafePointer<Float>) {
    var i = 0
    while i &+ 8 <= valueDim {
      var a = VectorMath.load8(acc + i)
      a += p0 * VectorMath.load8(v0 + i) + p1 * VectorMath.load8(v1 + i)
      a += p2 * VectorMath.load8(v2 + i) + p3 * VectorMath.load8(v3 + i)
      VectorMath.store8(a, acc + i)
      i &+= 8
    }
    while i < valueDim {
      acc[i] += p0 * v0[i] + p1 * v1[i] + p2 * v2[i] + p3 * v3[i]
      i &+= 1
    }
  }

  @inlinable @inline(__always)
  func axpy1(_ acc: UnsafeMutablePointer<Float>, _ p: Float, _ v: UnsafePointer<Float>) {
    var i = 0
    while i &+ 8 <= valueDim {
      VectorMath.store8(VectorMath.load8(acc + i) + p * VectorMath.load8(v + i), acc + i)
      i &+= 8
    }
    while i < valueDim {
      acc[i] += p * v[i]
      i &+= 1
    }
  }

  @inlinable @inline(__always)
  func scaleVector(_ acc: UnsafeMutablePointer<Float>, by factor: Float) {
    var i = 0
    while i &+ 8 <= valueDim {
      VectorMath.store8(VectorMath.load8(acc + i) * factor, acc + i)
      i &+= 8
    }
    while i < valueDim {
      acc[i] *= factor
      i &+= 1
    }
  }
}
