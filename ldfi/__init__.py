"""bop-bpf's engine: scenarios, the sandbox, lineage, the solver, fault models,
the search loop, the store, reports and the `ldfi` command line."""

__version__ = "0.1.0"
