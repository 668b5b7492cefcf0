"""Node side of ecnet: the CNI shim (`ecnet`), CNI types/results/errors, and the node agent.

The shim (`cni.shim`) imports only the standard library: kubelet execs it per pod and its
start-up is most of the ADD latency. Everything heavy lives in the agent (`cni.agent`).
"""
