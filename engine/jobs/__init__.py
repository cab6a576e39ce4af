"""Jobs: specs, queues, workers, routing, the job runner, events, outcomes, progress buses."""
