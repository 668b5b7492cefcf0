"""Generated gRPC stubs for the ecnet API (source: proto/ecnet_api/v1/ecnet.proto).

Kept in a package of ours because ``proto`` is a well-known import name; regenerate with
``.ci/gen-proto``; CI fails when they drift from the .proto.
"""
