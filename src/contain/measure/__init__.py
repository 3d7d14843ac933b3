"""Isolation measured across technologies: the tooling that drives other runtimes.

The inspector (:mod:`contain.inspect`) reads facts about one process from the live
kernel; this package runs workloads under every installed technology (contain, runc,
crun, runsc, bubblewrap, Podman, containerd) and compares them:

- :mod:`contain.measure.runners`      -- run a workload under each technology
- :mod:`contain.measure.classify`     -- the survey's Table 1, measured (``contain classify``)
- :mod:`contain.measure.interference` -- noisy neighbours: a well-behaved workload beside a hog
- :mod:`contain.measure.surface`      -- attack surface: what reaches the host kernel
- :mod:`contain.measure.rank`         -- the ordinal scale: ranks per axis, weighted
"""
