"""Relay's foundation, shared by every process: configuration (the only reader of the
environment), the store and its migrations, task names and enqueueing, logging and Sentry, and
the base app factory. It imports `schemas` and nothing else of Relay."""
