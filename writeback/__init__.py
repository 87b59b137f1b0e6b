"""Write-back: the schedule pushed into the tools people already use, idempotently, through the connectors."""
