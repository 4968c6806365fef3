"""An Abiquo-compatible API emulator for the rehearsal lab (LAB.md, ABIQUO-API.md).

It serves the subset of Abiquo 2.4/2.6's REST API rehost uses, and plays Abiquo's agents on the
lab hosts through libvirt: deploys write fresh template disks and define domains, the monitor
notices domains that vanish. ``python -m rehost.lab.emulator --lab-dir DIR`` runs it;
:func:`rehost.lab.emulator.process.start_emulator` starts it for ``rehost lab up``.
"""
