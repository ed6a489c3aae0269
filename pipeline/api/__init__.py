"""The HTTP API served by every worker's web server."""
