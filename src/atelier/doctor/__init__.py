"""`atelier doctor`: what the platform guide has users check by hand before a run.

One small module per check group (accelerators, versions, network, system); each returns
`Finding`s and facts, `checks.run_all` gathers them into a `Report`. Everything is read from
this machine: files, ioctl, the vendor tools' own output; no packet leaves it.
"""
