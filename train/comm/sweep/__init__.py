"""The collective benchmark, nccl-tests for any backend: `python -m train.comm.sweep`."""
