"""What every layer shares: parameter checks, checksums and the thread limits of worker
processes. Arrays and plain values only: nothing here reads a store or an image."""
