"""dpulab: simulated DPU labs for OVN-Kubernetes DPU offload."""
