"""SparkLoop's API v2, which only `relay backfill` reads (SparkLoop is a source, not a
destination)."""
