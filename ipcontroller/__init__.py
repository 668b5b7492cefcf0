"""The central IP controller: gRPC servers (IPController for agents, IPAdmin for ipctl), the
daemon `ecnet-ipcontroller`, the `ipctl` CLI, metrics and health. Domain logic lives in ipam."""
