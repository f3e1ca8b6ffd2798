"""Ground layer: diagnostics and their rendering, limits on hostile input, safe file reading and writing. Imports nothing of netspec."""
