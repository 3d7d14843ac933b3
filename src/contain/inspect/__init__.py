"""The isolation inspector and classifier.

Measures, on the live kernel, which isolation enablers confine a process (namespaces,
cgroups, capabilities, syscall filtering, LSMs, the root filesystem) and places it in
the taxonomy of the survey in ``seeds/004`` (host process, container, sandbox, hybrid).

Modules (each imported only by the command that needs it):

- :mod:`contain.inspect.procfs`   -- read one process's facts from /proc and cgroupfs
- :mod:`contain.inspect.caps`     -- capability numbers to names
- :mod:`contain.inspect.classes`  -- Table 1 marks, the class and its evidence
- :mod:`contain.inspect.taxonomy` -- the taxonomy tree (survey Figure 10) and its rendering
- :mod:`contain.inspect.probe`    -- the POSIX sh probe script and its parser
- :mod:`contain.inspect.interception` -- filtering or interception: who decides the calls
- :mod:`contain.inspect.virt`     -- whether the machine itself is a virtual machine
- :mod:`contain.inspect.survey`   -- the survey's own Table 1 rows, for comparison
- :mod:`contain.inspect.render`   -- table, markdown, json and html output

The drivers of other runtimes and the classifier (``contain classify``) live apart, in
:mod:`contain.measure`.

Nothing in the runtime's lifecycle commands imports this package.
"""

SCHEMA = "contain.inspect/1"
