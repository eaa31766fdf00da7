"""Storage: the resource tables and the repository that reads and writes them."""
