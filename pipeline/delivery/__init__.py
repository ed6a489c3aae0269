"""Pure decisions of the send stage: what a failure means, when to retry, breakers."""
