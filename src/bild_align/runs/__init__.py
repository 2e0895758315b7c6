"""Run records: locks, partial logs and fingerprints, atomic files, shards, the Hub."""
