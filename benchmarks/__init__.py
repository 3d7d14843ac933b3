"""Side-by-side benchmarks of contain against runc, crun, runsc (gVisor), bubblewrap and a
bare ``unshare`` floor.

Run them with ``contain bench [--runtimes LIST] [--quick] [--out DIR]`` (or
``python -m benchmarks``). Every benchmark module exposes ``run(session) -> Result``;
``benchmarks.driver`` runs them in order and writes the markdown report, the JSON file
with every sample and the PNG plots. Nothing here is imported by the runtime itself.
"""
