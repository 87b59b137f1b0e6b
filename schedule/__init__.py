"""The consolidated schedule: baselines, forecasts through dependencies across tools, slippage, critical path,
cycles and project health. Pure functions over the warehouse's frames (`schedule.compute.compute_schedule`), and
`compute_and_store` for the command line and Dagster alike."""
