/// The version of the GraphAttention library, "MAJOR.MINOR.PATCH": what `graph-attention --version`
/// prints and what the C ABI's `ga_version` returns (python/pyproject.toml's version is kept in step).
public let graphAttentionVersion: StaticString = "0.1.0"
