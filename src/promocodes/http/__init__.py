"""The wire: decode JSON, XML or form bodies into typed requests; encode the ``{data, error, error_text}``
envelope as JSON or XML. No rules here beyond the protocol's own (docs/api.md#requests, docs/api.md#the-envelope)."""
