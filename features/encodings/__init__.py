"""Image encodings (one module each) and the models they learn."""
