"""Converge benchmarks for paranoid.netconfine (issue 13, part 1).

Not part of the collection: a controller-side tool that times whole
``ansible-playbook`` processes against throw-away network-namespace hosts.

    scenarios   what to measure: a module, its N-rule parameters, the floor text, the peer tasks
    namespaces  create and delete namespace hosts (never touches the host's own firewall)
    processes   time one process: wall clock and peak RSS of its process tree
    playbooks   write inventories and playbooks, run ansible-playbook, read the recap
    suite       the measurements (per size, fleet) and the targets
    report      medians, ranges, ratios, the tables
"""
