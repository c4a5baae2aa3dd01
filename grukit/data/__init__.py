"""grukit.data: readers for each kind of input, batching, and the built-in data sets."""
