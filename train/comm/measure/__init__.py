"""In-run measurement: what each step's collectives carried and when (DDP buckets, FSDP ops),
wire counters, rank figures, and the run's report (dashboard layout, console table, PNG)."""
