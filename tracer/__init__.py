"""The user side of bop-bpf's kernel work: loading bpf/ with bcc, probing the
kernel, following process trees, decoding events and arming faults."""
