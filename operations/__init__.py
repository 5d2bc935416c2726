"""Operations: what an operator can do to Relay (replay, backfill, purge, the event queries and
stats), as plain functions that take the process's runtime (relay.runtime) and plain arguments
and return plain results. The `relay` command (web.cli) parses arguments, calls them and
prints; a web page could call the same. Below: the engine (workers/), the foundation (relay/)."""
