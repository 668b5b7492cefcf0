"""The agent's netlink seam, in three modules with one job each:

* `plan`: what a pod's interface should look like (pure: validation, normalisation, the
  requests to send; no pyroute2, testable without root);
* `netns`: getting into a pod's netns and back, the per-netns sockets and the host worker
  thread, and the kernel helpers the verbs share;
* `verbs`: `PodNetlink`, create/configure/delete/check, and the batched teardown.

Nothing is re-exported here, so importing `plan` never loads pyroute2.
"""
