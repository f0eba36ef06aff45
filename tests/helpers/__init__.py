"""What several test modules share, so that no test module imports another: where things
are (paths), running `bru` (cli), talking to a Prefect server (prefect) and reading what a
campaign left in its stores (stores). The real servers are fixtures of tests/servers.py."""
