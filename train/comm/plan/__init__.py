"""The cost model and the planner: alpha-beta collectives on links, replay of measured steps,
`python -m train.comm.plan`."""
