"""From logged behaviour parquet to training batches: schemas, synthetic world, samples, transform, loader."""
