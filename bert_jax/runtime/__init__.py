"""Process plumbing: file I/O, caches, the host allocator, hardware peaks, peer links."""
