"""Judge backends: where the judge model runs."""
