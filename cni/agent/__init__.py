"""The node agent (`ecnet-agent`): warm netlink, OVSDB and gRPC; serves the CNI shim."""
