"""SparkLoop's API v2, which operators' commands call (SparkLoop is a source, not a destination):
the client, its webhook registrations, and the one retry policy for those calls (retry.py)."""
